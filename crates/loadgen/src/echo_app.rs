//! A Twilio Media Streams app for the bench, in this process on loopback: the load's agents
//! point their `brain` at it, so every call's audio crosses the websocket both ways. It answers
//! as `builtin:echo` does (the meter's talkspurts must be answered the same way): it keeps a
//! caller's utterance from its first voiced 20 ms chunk, and once 500 ms of silence follow, it
//! sends the utterance back as `media` (160-byte chunks, all at once, as apps do) and a `mark`.
//! So the turn on the wire (talkspurt end → first voiced packet back) of a `media-streams`
//! bench against a `builtin:echo` one is what the bridge costs both ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dialtone_codec::{G711, G711Law, level_dbfs};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::LoadgenError;

/// Level above which a 20 ms chunk is voiced, dBFS (the meter's).
const VOICED_DBFS: f64 = -40.0;
/// Silent chunks that end an utterance: 500 ms, the speech loop's endpointing.
const ENDPOINTING_CHUNKS: usize = 25;
/// Bytes of a 20 ms µ-law chunk.
const CHUNK: usize = 160;

/// What the app has done, for the report.
#[derive(Debug, Default)]
pub struct EchoAppCounts {
    /// Streams opened.
    pub streams: AtomicU64,
    /// `media` events received.
    pub media_in: AtomicU64,
    /// Utterances echoed.
    pub echoed: AtomicU64,
}

/// The running app.
#[derive(Debug)]
pub struct EchoApp {
    url: String,
    counts: Arc<EchoAppCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoApp {
    /// Listens on a free loopback port.
    pub async fn start() -> Result<EchoApp, LoadgenError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(LoadgenError::io("binding the Media Streams app"))?;
        let address = listener
            .local_addr()
            .map_err(LoadgenError::io("the Media Streams app's address"))?;
        let counts = Arc::new(EchoAppCounts::default());
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let counts = shared.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        counts.streams.fetch_add(1, Ordering::Relaxed);
                        serve(ws, &counts).await;
                    }
                });
            }
        });
        Ok(EchoApp {
            url: format!("ws://{address}/media-stream"),
            counts,
            task,
        })
    }

    /// The websocket URL (an agent's `brain`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What it has done so far.
    pub fn counts(&self) -> &EchoAppCounts {
        &self.counts
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One stream: utterances kept and sent back after the endpointing silence.
async fn serve(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    counts: &EchoAppCounts,
) {
    let ulaw = G711::new(G711Law::Mu);
    let mut pcm = [0i16; CHUNK];
    let mut stream_sid = Value::Null;
    let mut utterance: Vec<u8> = Vec::new();
    let mut silent = 0usize;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match event.get("event").and_then(Value::as_str) {
            Some("start") => stream_sid = event.get("streamSid").cloned().unwrap_or_default(),
            Some("media") => {
                counts.media_in.fetch_add(1, Ordering::Relaxed);
                let Some(Ok(chunk)) = event
                    .pointer("/media/payload")
                    .and_then(Value::as_str)
                    .map(|p| STANDARD.decode(p))
                else {
                    continue;
                };
                let n = ulaw.decode(&chunk, &mut pcm);
                let voiced = level_dbfs(pcm.get(..n).unwrap_or_default()) > VOICED_DBFS;
                if voiced {
                    silent = 0;
                    utterance.extend_from_slice(&chunk);
                } else if !utterance.is_empty() {
                    silent += 1;
                    utterance.extend_from_slice(&chunk);
                    if silent >= ENDPOINTING_CHUNKS {
                        let voiced_len = utterance.len().saturating_sub(silent * CHUNK);
                        utterance.truncate(voiced_len);
                        for piece in utterance.chunks(CHUNK) {
                            let media = json!({"event": "media", "streamSid": stream_sid,
                                "media": {"payload": STANDARD.encode(piece)}});
                            if ws.feed(Message::text(media.to_string())).await.is_err() {
                                return;
                            }
                        }
                        let mark = json!({"event": "mark", "streamSid": stream_sid,
                            "mark": {"name": "echo"}});
                        if ws.send(Message::text(mark.to_string())).await.is_err() {
                            return;
                        }
                        counts.echoed.fetch_add(1, Ordering::Relaxed);
                        utterance.clear();
                        silent = 0;
                    }
                }
            }
            Some("stop") => break,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// An utterance comes back, whole and in order, once 500 ms of silence follow it; the
    /// silence before it and after it does not.
    #[tokio::test]
    async fn an_utterance_is_echoed_after_the_endpointing_silence() {
        let app = EchoApp::start().await.unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(app.url()).await.unwrap();
        let send = |event: Value| Message::text(event.to_string());
        ws.send(send(json!({"event": "start", "streamSid": "MZ1"})))
            .await
            .unwrap();
        let silence = STANDARD.encode([0xffu8; CHUNK]);
        let voiced: Vec<String> = (0..10u8)
            .map(|i| {
                let pcm: Vec<i16> = (0..CHUNK)
                    .map(|n| if (n / 10) % 2 == 0 { 8000 } else { -8000 } + i16::from(i))
                    .collect();
                let mut bytes = [0u8; CHUNK];
                G711::new(G711Law::Mu).encode(&pcm, &mut bytes);
                STANDARD.encode(bytes)
            })
            .collect();
        let chunks = std::iter::repeat_n(&silence, 5)
            .chain(&voiced)
            .chain(std::iter::repeat_n(&silence, ENDPOINTING_CHUNKS));
        for payload in chunks {
            let media = json!({"event": "media", "media": {"payload": payload}});
            ws.send(send(media)).await.unwrap();
        }
        let mut back = Vec::new();
        loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                panic!("the app closed")
            };
            let event: Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(event["streamSid"], "MZ1");
            match event["event"].as_str() {
                Some("media") => back.push(event["media"]["payload"].as_str().unwrap().to_owned()),
                Some("mark") => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(back, voiced);
        assert_eq!(app.counts().echoed.load(Ordering::Relaxed), 1);
    }
}
