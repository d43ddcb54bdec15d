//! Opening a Media Streams app's websocket: the host resolved once (a tenant's URL checked by
//! the outbound-address policy, the connection made to an address that passed), TLS by rustls
//! with the system's roots for `wss`, the agent's `brain_headers` on the upgrade request.

use std::net::SocketAddr;
use std::time::Duration;

use dialtone_agent::ResolveAddresses;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::StreamsTarget;
use crate::outbound::PolicyResolver;

/// A connected app.
pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the connection and the upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the app, or says why not.
pub(super) async fn connect(target: &StreamsTarget) -> Result<Socket, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, open(target))
        .await
        .map_err(|_| format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
}

async fn open(target: &StreamsTarget) -> Result<Socket, String> {
    let url = reqwest::Url::parse(&target.url).map_err(|e| format!("bad URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let addresses: Vec<SocketAddr> = match &target.vet {
        Some(policy) => {
            PolicyResolver::new(policy.clone())
                .resolve(&host, port)
                .await?
        }
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("{host} does not resolve: {e}"))?
            .collect(),
    };
    let mut last = format!("{host} has no address");
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad URL: {e}"))?;
    for (name, value) in &target.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("brain_headers: bad header name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("brain_headers: bad value of {name}"))?;
        request.headers_mut().insert(name, value);
    }
    let (socket, _) = tokio_tungstenite::client_async_tls_with_config(request, stream, None, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(socket)
}
