//! The two references the bench's figures are divided by, so they mean something on any
//! machine: a bare UDP reflector moving the same packets (the physical limit of media on this
//! machine), driven by the same per-call audio streams as the calls.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dialtone_sdp::AudioCodec;
use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token};
use tokio::sync::mpsc;

use crate::LoadgenError;
use crate::streams::{Measured, Streams};
use crate::voice::{CallMeasure, CallVoice};

/// Binds `count` sockets from `first_port` on `ip` (every second port) and, on one thread
/// waiting in one epoll, sends every datagram back where it came from, until the process ends.
/// Returns the addresses once bound.
pub fn reflect(
    ip: std::net::IpAddr,
    first_port: u16,
    count: u16,
) -> Result<Vec<SocketAddr>, LoadgenError> {
    let poll = Poll::new().map_err(LoadgenError::io("creating the reflector's epoll"))?;
    let mut sockets = Vec::new();
    for i in 0..count {
        let addr = SocketAddr::new(ip, first_port.saturating_add(i.saturating_mul(2)));
        let socket = UdpSocket::bind(addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(LoadgenError::io(format!("binding the reflector on {addr}")))?;
        let mut socket = MioSocket::from_std(socket);
        poll.registry()
            .register(&mut socket, Token(sockets.len()), Interest::READABLE)
            .map_err(LoadgenError::io("watching a reflector socket"))?;
        sockets.push(socket);
    }
    let addresses = (0..count)
        .map(|i| SocketAddr::new(ip, first_port.saturating_add(i.saturating_mul(2))))
        .collect();
    std::thread::Builder::new()
        .name("reflector".into())
        .spawn(move || reflect_on(poll, &sockets))
        .map_err(LoadgenError::io("starting the reflector thread"))?;
    Ok(addresses)
}

fn reflect_on(mut poll: Poll, sockets: &[MioSocket]) {
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 1500];
    loop {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return;
        }
        for event in events.iter() {
            let Some(socket) = sockets.get(event.token().0) else {
                continue;
            };
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let _ = socket.send_to(buf.get(..n).unwrap_or_default(), from);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {}
                }
            }
        }
    }
}

/// One G.711 stream to each of `targets` for `hold`, like the calls' audio (on the same
/// stream threads); returns what came back on each.
pub async fn drive(
    ip: std::net::IpAddr,
    targets: &[SocketAddr],
    hold: Duration,
    stream_threads: usize,
) -> Result<Vec<CallMeasure>, LoadgenError> {
    let (tx, mut measured) = mpsc::unbounded_channel::<Measured>();
    let mut streams = Streams::new(stream_threads, &tx)?;
    drop(tx);
    for (i, target) in targets.iter().enumerate() {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(LoadgenError::io("binding a stream socket"))?;
        let voice = CallVoice::new(
            Instant::now(),
            AudioCodec::Pcmu,
            0,
            0,
            0x7e70_0000 + i as u32,
        )?;
        streams.start(i.to_string(), socket, Some(*target), voice);
        // Spread the streams' clocks over the 20 ms like calls that started at other times.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    }
    tokio::time::sleep(hold).await;
    drop(streams);
    let mut measures = Vec::new();
    while let Some((_, measure, _)) = measured.recv().await {
        measures.push(measure);
    }
    Ok(measures)
}
