//! An AgentBridge brain with speech of its own: its `PlayAudio` clips, at 8, 24 and 48 kHz,
//! reach the callee (baresip) as the tone they carry, as long as they are, and each clip's
//! mark comes back in `PlayoutDone` once it has played, in order. (Each clip's resampling to
//! 16 kHz, exact in length and timing, is unit-tested in the engine's `brains::remote`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_control::proto::agent_bridge_service_server::{
    AgentBridgeService, AgentBridgeServiceServer,
};
use dialtone_control::proto::converse_request::Event;
use dialtone_control::proto::converse_response::Action;
use dialtone_control::proto::{ConverseRequest, ConverseResponse, HangUp, PlayAudio};
use dialtone_test_support::audio::sine;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::agent::{callee, trunk_to};
use super::{assert_ended, wait_final, world};

/// The clips' rates and marks, played in this order.
const CLIPS: [(u32, &str); 3] = [
    (8_000, "eight"),
    (24_000, "twenty-four"),
    (48_000, "forty-eight"),
];
/// Each clip's length: not a whole number of 20 ms frames, a whole number of the tone's
/// cycles.
const CLIP_MS: usize = 590;
const TONE_HZ: f64 = 1000.0;
const AMPLITUDE: f64 = 10_000.0;

/// Silence (16 kHz) played before the clips and after them, so that the callee's recording
/// holds the whole tone: from before its jitter buffer has started to after its last frame.
const SILENCE_MS: usize = 400;

/// The marks the brain was told had played, in order.
type Marks = Arc<Mutex<Vec<String>>>;

struct Brain {
    marks: Marks,
}

/// A clip of the tone at `rate`, PCM16LE.
fn clip(rate: u32) -> Vec<u8> {
    let mut samples = vec![0i16; CLIP_MS * rate as usize / 1000];
    sine(rate, TONE_HZ, AMPLITUDE, 0, &mut samples);
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

#[tonic::async_trait]
impl AgentBridgeService for Brain {
    type ConverseStream = ReceiverStream<Result<ConverseResponse, Status>>;

    async fn converse(
        &self,
        request: Request<Streaming<ConverseRequest>>,
    ) -> Result<Response<Self::ConverseStream>, Status> {
        let mut events = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let marks = self.marks.clone();
        tokio::spawn(async move {
            let reply = |action| {
                Ok(ConverseResponse {
                    action: Some(action),
                })
            };
            while let Ok(Some(message)) = events.message().await {
                let actions = match message.event {
                    Some(Event::Start(_)) => {
                        let silence = |mark: &str| {
                            Action::Play(PlayAudio {
                                pcm: vec![0; SILENCE_MS * 32],
                                sample_rate: 0,
                                mark: Some(mark.into()),
                            })
                        };
                        let clips = CLIPS.iter().map(|(rate, mark)| {
                            Action::Play(PlayAudio {
                                pcm: clip(*rate),
                                sample_rate: *rate,
                                mark: Some((*mark).into()),
                            })
                        });
                        std::iter::once(silence("before"))
                            .chain(clips)
                            .chain([silence("after")])
                            .collect()
                    }
                    Some(Event::PlayoutDone(done)) => {
                        let mut marks = marks.lock().unwrap();
                        marks.push(done.mark);
                        match marks.last().is_some_and(|m| m == "after") {
                            true => vec![Action::HangUp(HangUp {
                                reason: "completed".into(),
                            })],
                            false => Vec::new(),
                        }
                    }
                    _ => continue,
                };
                for action in actions {
                    if tx.send(reply(action)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the brain on a free loopback port; its address and the marks it hears.
async fn start_brain() -> (String, Marks) {
    let marks = Marks::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("grpc://{}", listener.local_addr().unwrap());
    let service = AgentBridgeServiceServer::new(Brain {
        marks: marks.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, marks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_bridge_brain_plays_its_own_audio_at_any_rate_as_long_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let (address, marks) = start_brain().await;
    // The callee listens (silence) for longer than the clips last; the brain hangs up first.
    let baresip = callee(dir.path(), &[Ok(8000)]);
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": address}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "completed", "agent");
    let heard: Vec<String> = marks.lock().unwrap().clone();
    let mut played = vec!["before"];
    played.extend(CLIPS.map(|(_, mark)| mark));
    played.push("after");
    assert_eq!(heard, played, "{record:#}");

    // The three clips back to back: one tone, as long as the three together, without a gap
    // (each clip ends where a cycle of the tone does, so the next goes on in phase). A clip
    // padded to whole 20 ms frames would leave a gap of silence after it and lengthen the tone.
    let (rate, samples) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
    let loud: Vec<bool> = samples
        .chunks_exact(rate as usize / 1000)
        .map(|ms| {
            let power = ms.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / ms.len() as f64;
            power.sqrt() > AMPLITUDE / 4.0
        })
        .collect();
    let first = loud.iter().position(|l| *l).unwrap();
    let last = loud.iter().rposition(|l| *l).unwrap();
    let gaps = loud[first..=last].iter().filter(|l| !**l).count();
    let heard_ms = last + 1 - first;
    let played_ms = CLIPS.len() * CLIP_MS;
    assert!(
        heard_ms.abs_diff(played_ms) <= 2 && gaps == 0,
        "{heard_ms} ms of the tone heard ({gaps} ms of them quiet), {played_ms} ms played; \
         media {}",
        record["media_stats"]
    );
    w.finish().await;
}
