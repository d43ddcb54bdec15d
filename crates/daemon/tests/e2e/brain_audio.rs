//! An AgentBridge brain with speech of its own: its `PlayAudio` clips, at 8, 24 and 48 kHz,
//! reach the callee (baresip) as the tone they carry, as long as they are, and each clip's
//! mark comes back in `PlayoutDone` once it has played, in order, with the clip's length. A
//! `SpeakText` line the callee talks over comes back interrupted, with the part of it that was
//! played. (Each clip's resampling to 16 kHz, exact in length and timing, is unit-tested in the
//! engine's `brains::remote`; the marks' bookkeeping in `brains::playout_marks`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_control::proto::agent_bridge_service_server::{
    AgentBridgeService, AgentBridgeServiceServer,
};
use dialtone_control::proto::converse_request::Event;
use dialtone_control::proto::converse_response::Action;
use dialtone_control::proto::{
    ConverseRequest, ConverseResponse, HangUp, PlayAudio, PlayoutDone, Speak,
};
use dialtone_test_support::audio::sine;
use dialtone_test_support::media::speech_ulaw;
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

/// The marks the brain was told had played (or been cut), in order.
type Marks = Arc<Mutex<Vec<PlayoutDone>>>;

/// A clip of the tone at `rate`, PCM16LE.
fn clip(rate: u32) -> Vec<u8> {
    let mut samples = vec![0i16; CLIP_MS * rate as usize / 1000];
    sine(rate, TONE_HZ, AMPLITUDE, 0, &mut samples);
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// When a [`Scripted`] brain hangs up.
#[derive(Debug, Clone, Copy)]
enum HangUpOn {
    /// Once this mark is reported.
    Mark(&'static str),
    /// Once the callee has finished speaking.
    CallerDone,
}

/// A brain that opens with `opening`, keeps every mark it is told of, and hangs up on
/// `hang_up`.
struct Scripted {
    opening: Vec<Action>,
    hang_up: HangUpOn,
    marks: Marks,
}

#[tonic::async_trait]
impl AgentBridgeService for Scripted {
    type ConverseStream = ReceiverStream<Result<ConverseResponse, Status>>;

    async fn converse(
        &self,
        request: Request<Streaming<ConverseRequest>>,
    ) -> Result<Response<Self::ConverseStream>, Status> {
        let mut events = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (opening, hang_up, marks) = (self.opening.clone(), self.hang_up, self.marks.clone());
        tokio::spawn(async move {
            let done = || {
                vec![Action::HangUp(HangUp {
                    reason: "completed".into(),
                })]
            };
            while let Ok(Some(message)) = events.message().await {
                let actions = match message.event {
                    Some(Event::Start(_)) => opening.clone(),
                    Some(Event::PlayoutDone(played)) => {
                        let last = matches!(hang_up, HangUpOn::Mark(m) if m == played.mark);
                        marks.lock().unwrap().push(played);
                        if last { done() } else { Vec::new() }
                    }
                    Some(Event::SpeechEnded(_)) if matches!(hang_up, HangUpOn::CallerDone) => {
                        done()
                    }
                    _ => continue,
                };
                for action in actions {
                    let reply = ConverseResponse {
                        action: Some(action),
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The line the brain says after its clip when the callee talks over it: about ten seconds of
/// espeak-ng.
const LINE: &str = "Good afternoon, I am calling on behalf of the Acme company about the quote you \
                    asked for last week on our website, and I would like to go over the details \
                    with you now.";

/// Serves `brain` on a free loopback port; its address.
async fn serve(brain: Scripted) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("grpc://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentBridgeServiceServer::new(brain))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    address
}

/// Serves the brain of the clips on a free loopback port: silence marked "before", the clips
/// (each marked with its name), silence marked "after", then a hang-up. Its address and the
/// marks it hears.
async fn start_brain() -> (String, Marks) {
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
    let marks = Marks::default();
    let address = serve(Scripted {
        opening: std::iter::once(silence("before"))
            .chain(clips)
            .chain([silence("after")])
            .collect(),
        hang_up: HangUpOn::Mark("after"),
        marks: marks.clone(),
    })
    .await;
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
    let heard: Vec<(String, bool, u32)> = marks
        .lock()
        .unwrap()
        .iter()
        .map(|done| (done.mark.clone(), done.interrupted, done.played_ms))
        .collect();
    // Each mark with its whole clip's length, played to its end.
    let silence = |mark: &str| (mark.to_owned(), false, SILENCE_MS as u32);
    let mut played = vec![silence("before")];
    played.extend(CLIPS.map(|(_, mark)| (mark.to_owned(), false, CLIP_MS as u32)));
    played.push(silence("after"));
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

/// The callee talks over the brain's line (`barge_in` "on"): the clip before it is reported
/// played, all of it; the line interrupted, with the part of it that was played before the
/// callee cut in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_bridge_brain_hears_how_much_of_its_line_the_callee_let_it_say() {
    let dir = tempfile::tempdir().unwrap();
    // A clip of the tone (16 kHz, marked "clip"), then [`LINE`] (marked "line"); a hang-up
    // once the callee has finished speaking.
    let marks = Marks::default();
    let address = serve(Scripted {
        opening: vec![
            Action::Play(PlayAudio {
                pcm: clip(16_000),
                sample_rate: 16_000,
                mark: Some("clip".into()),
            }),
            Action::Speak(Speak {
                text: LINE.into(),
                mark: Some("line".into()),
            }),
        ],
        hang_up: HangUpOn::CallerDone,
        marks: marks.clone(),
    })
    .await;
    // The clip (590 ms) and about 1.9 s of the line play before the callee speaks.
    let baresip = callee(
        dir.path(),
        &[Ok(2500), Err("Sorry, how much does it cost?"), Ok(5000)],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": address, "barge_in": "on"}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "completed", "agent");
    let heard = marks.lock().unwrap().clone();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert_eq!(
        (
            heard[0].mark.as_str(),
            heard[0].interrupted,
            heard[0].played_ms
        ),
        ("clip", false, CLIP_MS as u32)
    );
    let line = &heard[1];
    assert!(line.mark == "line" && line.interrupted, "{line:?}");
    // What of the line was played: from after the clip to the callee's first words, and far
    // less than the whole line (its length as espeak-ng says it, at 8 kHz).
    let line_ms = speech_ulaw(dir.path(), LINE).unwrap().len() / 8;
    let played_ms = line.played_ms as usize;
    assert!(
        (1000..4000).contains(&played_ms) && played_ms + 3000 < line_ms,
        "{played_ms} ms of the {line_ms} ms line played"
    );
    w.finish().await;
}
