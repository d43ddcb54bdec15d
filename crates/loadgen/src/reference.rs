//! The two references the bench's figures are divided by, so they mean something on any
//! machine: a bare UDP reflector moving the same packets (the physical limit of media on this
//! machine), driven by the same per-call audio streams as the calls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialtone_sdp::AudioCodec;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::LoadgenError;
use crate::sim::stream;
use crate::voice::{CallMeasure, CallVoice};

/// Binds `count` sockets from `first_port` on `ip` and sends every datagram back where it came
/// from, until the process ends. Returns the addresses once bound.
pub async fn reflect(
    ip: std::net::IpAddr,
    first_port: u16,
    count: u16,
) -> Result<Vec<SocketAddr>, LoadgenError> {
    let mut addresses = Vec::new();
    for i in 0..count {
        let addr = SocketAddr::new(ip, first_port.saturating_add(i.saturating_mul(2)));
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(LoadgenError::io(format!("binding the reflector on {addr}")))?;
        addresses.push(addr);
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(buf.get(..n).unwrap_or_default(), from).await;
            }
        });
    }
    Ok(addresses)
}

/// One G.711 stream to each of `targets` for `hold`, like the calls' audio; returns what came
/// back on each.
pub async fn drive(
    ip: std::net::IpAddr,
    targets: &[SocketAddr],
    hold: Duration,
) -> Result<Vec<CallMeasure>, LoadgenError> {
    let mut running = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(LoadgenError::io("binding a stream socket"))?;
        let voice = CallVoice::new(
            Instant::now(),
            AudioCodec::Pcmu,
            0,
            0,
            0x7e70_0000 + i as u32,
        )?;
        let (stop, stopped) = oneshot::channel::<()>();
        let target = *target;
        running.push((
            stop,
            tokio::spawn(async move { stream(socket, Some(target), voice, stopped).await.0 }),
        ));
        // Spread the streams' clocks over the 20 ms like calls that started at other times.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    }
    tokio::time::sleep(hold).await;
    let mut measures = Vec::new();
    for (stop, task) in running {
        let _ = stop.send(());
        if let Ok(m) = task.await {
            measures.push(m);
        }
    }
    Ok(measures)
}
