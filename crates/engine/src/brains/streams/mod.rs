//! A Twilio Media Streams app as the brain (`brain: "ws://…" | "wss://…"`): per answered call
//! the engine opens the websocket (rustls for `wss`, the agent's `brain_headers` on the
//! upgrade) and speaks the protocol, so an app written for Twilio runs unchanged.
//!
//! The protocol (events, mark bookkeeping against played audio, pacing by the media clock) is
//! the sans-IO [`session::StreamsSession`]; this module is its driver: the connection, the
//! speech loop's clock, and the engine's duties, which apply whatever the brain (AMD and the
//! voicemail action, the silence guard). The speech loop's own barge-in is off unless the
//! agent sets `barge_in`: the app decides, and sends `clear`.
//!
//! Failure is never dead air: an app that cannot be reached, closes mid-call or breaks the
//! protocol leaves the caller the engine's apology, then the call ends with `brain_error`
//! and the record's `result_error` names the websocket close code.

mod connect;
mod session;

use std::collections::BTreeMap;
use std::time::Instant;

use dialtone_media::{FrameReceiver, FrameSender, MediaCall};
use dialtone_speech::{FRAME_SAMPLES, SpeechEvent};
use dialtone_storage::EndReason;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

use super::{APOLOGY, BrainContext, BrainInput, BrainRequest, Duties, IvrStep, Run, SilenceClock};
use connect::Socket;
use session::{AppEffect, StreamStart, StreamsSession};

/// Where the app is and who the stream belongs to.
#[derive(Debug, Clone)]
pub(crate) struct StreamsTarget {
    /// `ws://…` or `wss://…`.
    pub(crate) url: String,
    /// Sent on the upgrade request.
    pub(crate) headers: BTreeMap<String, String>,
    /// `Some(policy)` for a URL a tenant gave: its host is resolved once and checked by the
    /// outbound-address policy; `None` for the operator's default brain.
    pub(crate) vet: Option<crate::outbound::PrivateDestinations>,
    /// The organisation's id (`accountSid`).
    pub(crate) account_sid: String,
    /// The call's context (`customParameters`).
    pub(crate) context: Value,
}

/// How many text frames may wait for a slow app before the caller's audio is dropped (the
/// call never waits on the app).
const SEND_QUEUE: usize = 512;

/// Starts the Media Streams bridge to `target` on the call's media, on `runtime` (in the
/// call's span).
pub(crate) fn start_streams(
    runtime: &tokio::runtime::Handle,
    target: StreamsTarget,
    media: &mut MediaCall,
    context: BrainContext,
) -> Option<tokio::task::JoinHandle<()>> {
    let inbound = media.take_inbound()?;
    let outbound = media.take_outbound()?;
    Some(runtime.spawn(run_streams(target, inbound, outbound, context).in_current_span()))
}

/// The context's values as `customParameters`: strings as they are, anything else as JSON.
fn custom_parameters(context: &Value) -> BTreeMap<String, String> {
    context
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Why the app is no longer heard, for the record: the close code always named.
fn closed_message(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) => format!(
            "the Media Streams app closed the websocket mid-call (close code {}{})",
            u16::from(frame.code),
            if frame.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", frame.reason.as_str())
            }
        ),
        None => "the Media Streams app's websocket ended without a close frame (close code 1006)"
            .to_owned(),
    }
}

/// The writer of the websocket: sends what the call queues, in order; a close ends it.
fn spawn_writer(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(SEND_QUEUE);
    let task = tokio::spawn(
        async move {
            while let Some(message) = rx.recv().await {
                let close = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        }
        .in_current_span(),
    );
    (tx, task)
}

async fn run_streams(
    target: StreamsTarget,
    mut inbound: FrameReceiver,
    outbound: FrameSender,
    context: BrainContext,
) {
    let answered = Instant::now();
    let call_id = context.call_id;
    let mut run = Run::new(context, outbound, answered, IvrStep::Prompting);
    let start = StreamStart {
        stream_sid: format!("MZ{}", call_id.simple()),
        account_sid: target.account_sid.clone(),
        call_sid: call_id.to_string(),
        custom_parameters: custom_parameters(&target.context),
    };
    let Ok(mut session) = StreamsSession::new(start) else {
        tracing::error!("the Media Streams resampler did not start");
        return;
    };
    let mut failure: Option<String> = None;
    let (mut to_app, mut from_app, mut writer) = (None, None, None);
    match connect::connect(&target).await {
        Ok(socket) => {
            let (sink, stream) = socket.split();
            let (tx, task) = spawn_writer(sink);
            (to_app, from_app, writer) = (Some(tx), Some(stream), Some(task));
        }
        Err(error) => {
            tracing::warn!(%error, url = %target.url, "the Media Streams app cannot be reached");
            failure = Some(format!(
                "the Media Streams app could not be reached: {error}"
            ));
            run.say(APOLOGY, "apology");
        }
    }
    let mut duties = Duties::new(answered);
    let mut clock = SilenceClock::new();
    let mut dropped: u64 = 0;
    loop {
        let mut broke: Option<String> = None;
        tokio::select! {
            biased;
            frame = inbound.recv() => {
                let Some(frame) = frame else { break };
                let now = Instant::now();
                run.speech.handle_caller_frame(now, &frame.samples);
                clock.heard(now);
                run.duty_timers(&mut duties, now);
                session.caller_frame(&frame.samples);
            }
            Some(input) = run.context.inputs.recv() => match input {
                BrainInput::Dtmf(digit) => session.dtmf(digit),
                // The app never asks for a transfer; one the API asked for that failed
                // leaves the call as it was.
                BrainInput::TransferFailed { .. } => {}
                BrainInput::Ended { .. } => break,
            },
            message = next_message(&mut from_app) => match message {
                Some(Ok(Message::Text(text))) => match session.handle_app(text.as_str(), &mut run.speech, duties.voicemail()) {
                    Ok(AppEffect::Cleared) => run.outbound.clear(),
                    Ok(AppEffect::Queued) => {}
                    Err(error) => {
                        close(&to_app, CloseCode::Protocol, "protocol error");
                        broke = Some(format!(
                            "the Media Streams app broke the protocol (close code 1002): {error}"
                        ));
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    close(&to_app, CloseCode::Unsupported, "text frames only");
                    broke = Some(
                        "the Media Streams app sent a binary frame (close code 1003): events are text"
                            .to_owned(),
                    );
                }
                Some(Ok(Message::Close(frame))) => broke = Some(closed_message(frame.as_ref())),
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    broke = Some(format!(
                        "the Media Streams app's websocket failed (close code 1006): {error}"
                    ));
                }
                None => broke = Some(closed_message(None)),
            },
            chunk = super::next_chunk(&mut run.speaking) => run.engine_speech(chunk),
            input = duties.next_input() => run.duty_input(&mut duties, input),
            now = clock.silence() => {
                run.speech.handle_caller_frame(now, &[0; FRAME_SAMPLES]);
                run.duty_timers(&mut duties, now);
                session.caller_frame(&[0; FRAME_SAMPLES]);
            }
        }
        if let Some(why) = broke {
            tracing::warn!(why, "the Media Streams app is gone mid-call");
            from_app = None;
            to_app = None;
            failure = Some(why);
            if !duties.voicemail() {
                // (A voicemail message under way is the engine's: it plays on.)
                run.speech.clear_playout();
                run.outbound.clear();
                run.say(APOLOGY, "apology");
            }
        }
        while let Some(text) = session.poll_transmit() {
            match &to_app {
                Some(tx) if tx.try_send(Message::text(text)).is_err() => dropped += 1,
                _ => {}
            }
        }
        while let Some(event) = run.speech.poll_event() {
            if run.duty(&mut duties, &event) {
                continue;
            }
            match event {
                SpeechEvent::PlayoutDone { mark } if session.playout_done(&mark) => {}
                SpeechEvent::PlayoutDone { mark } if mark == "apology" && failure.is_some() => {
                    let _ = run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::BrainError,
                    });
                }
                SpeechEvent::BargeIn { .. } if failure.is_some() => {
                    // The caller talked over the apology: end now.
                    let _ = run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::BrainError,
                    });
                }
                SpeechEvent::BargeIn { .. } => {
                    run.outbound.clear();
                    session.playout_cleared();
                }
                SpeechEvent::Dtmf { digit, .. } => session.dtmf(digit),
                other => tracing::trace!(?other, "speech event"),
            }
        }
        while let Some(text) = session.poll_transmit() {
            match &to_app {
                Some(tx) if tx.try_send(Message::text(text)).is_err() => dropped += 1,
                _ => {}
            }
        }
        run.feed_outbound();
        if run.outbound.is_closed() {
            break;
        }
    }
    session.stop();
    if let Some(tx) = to_app.take() {
        while let Some(text) = session.poll_transmit() {
            let _ = tx.send(Message::text(text)).await;
        }
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "call ended".into(),
            })))
            .await;
    }
    if let Some(task) = writer {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "events dropped: the Media Streams app did not keep up"
        );
    }
    run.finish_duties(duties).await;
    if !run.transcript.is_empty() {
        run.save_transcript().await;
    }
    let context = &run.context;
    let expects_result = context.returns.is_some();
    finish_result(
        context.storage.clone(),
        context.call_id,
        expects_result,
        failure.as_deref(),
    )
    .await;
}

/// The record's result at the end: the app may have posted one (`POST /v1/calls/{id}/result`),
/// which stands; otherwise why there is none (the failure, with its close code).
async fn finish_result(
    storage: dialtone_storage::Storage,
    call_id: uuid::Uuid,
    expects_result: bool,
    failure: Option<&str>,
) {
    let posted = storage
        .get_call(call_id)
        .await
        .is_ok_and(|call| call.result.is_some());
    if posted {
        return;
    }
    let why = match failure {
        Some(why) => why,
        None if expects_result => "the call ended without a result",
        None => return,
    };
    if let Err(error) = storage.set_result(call_id, None, Some(why)).await {
        tracing::error!(%error, "could not record why there is no result");
    }
}

/// Queues a close frame (the writer ends with it).
fn close(to_app: &Option<mpsc::Sender<Message>>, code: CloseCode, reason: &str) {
    if let Some(tx) = to_app {
        let _ = tx.try_send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })));
    }
}

/// The app's next frame; pending while there is no connection.
async fn next_message(
    from_app: &mut Option<futures_util::stream::SplitStream<Socket>>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match from_app {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
