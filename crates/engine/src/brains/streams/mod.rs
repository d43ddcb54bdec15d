//! A Twilio Media Streams app as the brain (`brain: "ws://…" | "wss://…"`): per answered call
//! the engine opens the websocket (rustls for `wss`, the agent's `brain_headers` on the
//! upgrade) and speaks the protocol, so an app written for Twilio runs unchanged.
//!
//! The protocol (events, mark bookkeeping against played audio, pacing by the media clock) is
//! the sans-IO [`StreamsSession`]; this module is its driver: the connection, the
//! speech loop's clock, and the engine's duties, which apply whatever the brain (AMD and the
//! voicemail action, the silence guard). The speech loop's own barge-in is off unless the
//! agent sets `barge_in`: the app decides, and sends `clear`.
//!
//! An app that closes its stream normally (close code 1000 or 1001) ends it as under Twilio:
//! its queued audio plays out, then the call hangs up as `completed`. Failure is never dead
//! air: an app that cannot be reached, fails mid-call (1006, 1011, …), stops reading or sends
//! binary frames leaves the caller the engine's apology, then the call ends with `brain_error`
//! and the record's `result_error` names the websocket close code.

mod connect;
mod writer;

use std::collections::BTreeMap;
use std::time::Instant;

use dialtone_media::{FrameReceiver, FrameSender, MediaCall};
use dialtone_speech::{FRAME_SAMPLES, SpeechEvent};
use dialtone_storage::EndReason;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

use super::{APOLOGY, BrainContext, BrainInput, BrainRequest, Duties, IvrStep, Run, SilenceClock};
use connect::Socket;
use dialtone_media_streams::{AppEffect, StreamStart, StreamsSession};
use writer::{FLUSH_WAIT, Outgoing, WRITE_TIMEOUT, Writer};

/// The histogram of the caller's audio on its way to the app: the RTP packet received → its
/// `media` event written to the app's websocket, seconds (one caller frame a second timed, on
/// every call).
pub const INBOUND_METRIC: &str = "dialtone_media_streams_inbound_seconds";
/// The histogram of the app's audio on its way to the caller: its `media` event read → the
/// media tick that takes its first frame for the wire, seconds (one event timed at a time, on
/// every call, among those that find no audio of the app still queued: the bridge's own delay,
/// not the app's buffering).
pub const OUTBOUND_METRIC: &str = "dialtone_media_streams_outbound_seconds";
/// One caller frame in this many is timed for [`INBOUND_METRIC`].
const TIME_EVERY_FRAMES: u64 = 50;

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

/// How many text frames may wait for a slow app; the last [`dialtone_media_streams::CONTROL_ROOM`] of them
/// are kept for control events, the caller's audio dropped first (the call never waits on the
/// app).
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

/// The playout mark behind the app's last audio once it ended its stream normally.
const STREAM_ENDED: &str = "stream ended";

/// Whether a close is the app ending its stream (1000 normal, 1001 going away) rather than a
/// failure (1006, 1011, a 1002 protocol error…), which leaves the caller the apology.
fn ended_normally(frame: &CloseFrame) -> bool {
    matches!(frame.code, CloseCode::Normal | CloseCode::Away)
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
    // The app closed its stream normally: the call ends once its audio has played.
    let mut stream_ended = false;
    let (mut to_app, mut from_app, mut writer) = (None, None, None);
    match connect::connect(&target).await {
        Ok(socket) => {
            let (sink, stream) = socket.split();
            let (tx, task) = Writer::spawn(sink, SEND_QUEUE, WRITE_TIMEOUT);
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
    let mut caller_frames = 0u64;
    // When the app's `media` whose first frame the outbound ring watches was read.
    let mut app_audio_read: Option<Instant> = None;
    loop {
        let voicemail = duties.voicemail();
        let mut broke: Option<String> = None;
        tokio::select! {
            biased;
            frame = inbound.recv() => {
                let Some(frame) = frame else { break };
                let now = Instant::now();
                run.speech.handle_caller_frame(now, &frame.samples);
                clock.heard(now);
                run.duty_timers(&mut duties, now);
                caller_frames += 1;
                let timed = caller_frames.is_multiple_of(TIME_EVERY_FRAMES).then_some(frame.at);
                session.caller_frame(&frame.samples, timed);
            }
            Some(input) = run.context.inputs.recv() => match input {
                BrainInput::Dtmf(digit) => session.dtmf(digit),
                // The app never asks for a transfer; one the API asked for that failed
                // leaves the call as it was.
                BrainInput::TransferFailed { .. } => {}
                BrainInput::Ended { .. } => break,
            },
            message = next_message(&mut from_app) => match message {
                Some(Ok(Message::Text(text))) => {
                let read = Instant::now();
                let ahead = run.speech.queued_samples();
                match session.handle_app(text.as_str(), &mut run.speech, duties.voicemail()) {
                    Ok(AppEffect::Cleared) => {
                        run.outbound.clear();
                        app_audio_read = None;
                    }
                    Ok(AppEffect::Queued) => {
                        // Timed when it finds nothing queued before it (the bridge's own delay,
                        // not the app's buffering): its first sample leaves in the next frame.
                        if app_audio_read.is_none() && ahead == 0 && run.speech.queued_samples() > 0 {
                            run.outbound.watch(0);
                            app_audio_read = Some(read);
                        }
                    }
                    Ok(AppEffect::Overflowed) if session.overflowed() == 1 => tracing::warn!(
                        "the Media Streams app sends audio faster than it plays: over 60 s queued, the excess is dropped"
                    ),
                    Ok(AppEffect::Overflowed) => {}
                    // As under Twilio, an invalid message is logged and ignored.
                    Err(error) if session.invalid() == 1 => {
                        tracing::warn!(%error, "the Media Streams app sent an invalid message: ignored (and any after it)");
                    }
                    Err(_) => {}
                }
                }
                Some(Ok(Message::Binary(_))) => {
                    close(&to_app, CloseCode::Unsupported, "text frames only");
                    broke = Some(
                        "the Media Streams app sent a binary frame (close code 1003): events are text"
                            .to_owned(),
                    );
                }
                Some(Ok(Message::Close(frame))) if frame.as_ref().is_some_and(ended_normally) => {
                    // The app ended its stream: under Twilio the call goes on to its end, so
                    // the app's queued audio plays out, then the call hangs up as completed.
                    tracing::info!("the Media Streams app ended its stream");
                    (from_app, to_app) = (None, None);
                    stream_ended = true;
                    if !duties.voicemail() {
                        run.speech.play(Vec::new(), Some(STREAM_ENDED.to_owned()));
                    }
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
                session.caller_frame(&[0; FRAME_SAMPLES], None);
            }
        }
        if broke.is_none() && to_app.as_ref().is_some_and(mpsc::Sender::is_closed) {
            broke = Some(format!(
                "the Media Streams app read nothing for {} s: its socket was dropped (close code 1006)",
                WRITE_TIMEOUT.as_secs()
            ));
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
                app_audio_read = None;
                run.say(APOLOGY, "apology");
            }
        }
        while let Some(event) = run.speech.poll_event() {
            if run.duty(&mut duties, &event) {
                continue;
            }
            match event {
                SpeechEvent::PlayoutDone { mark } if session.playout_done(&mark) => {}
                SpeechEvent::PlayoutDone { mark } if mark == STREAM_ENDED => {
                    let _ = run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::Completed,
                    });
                }
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
                SpeechEvent::BargeIn { .. } if stream_ended => {
                    // The caller talked over the app's last audio (and its end mark): end now.
                    let _ = run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::Completed,
                    });
                }
                SpeechEvent::BargeIn { at, .. } => {
                    run.barge_in(at);
                    app_audio_read = None;
                    session.playout_cleared();
                }
                SpeechEvent::Dtmf { digit, .. } => session.dtmf(digit),
                other => tracing::trace!(?other, "speech event"),
            }
        }
        if !voicemail && duties.voicemail() {
            // The engine's voicemail message took over and cleared the app's playout.
            session.playout_cleared();
            app_audio_read = None;
        }
        transmit(&mut session, to_app.as_ref());
        run.feed_outbound();
        if let Some(read) = app_audio_read
            && let Some(taken) = run.outbound.watched_sent_at()
        {
            app_audio_read = None;
            metrics::histogram!(OUTBOUND_METRIC)
                .record(taken.saturating_duration_since(read).as_secs_f64());
        }
        if run.outbound.is_closed() {
            break;
        }
    }
    // The end never waits on the app: `stop` and the close go if there is room, the writer has
    // FLUSH_WAIT to send them, then it and the socket are gone.
    session.stop();
    if let Some(tx) = to_app.take() {
        transmit(&mut session, Some(&tx));
        close(&Some(tx), CloseCode::Normal, "call ended");
    }
    drop(from_app);
    if let Some(writer) = writer {
        writer.finish(FLUSH_WAIT).await;
    }
    if session.overflowed() > 0 {
        tracing::warn!(
            dropped = session.overflowed(),
            "media events of the Media Streams app dropped over the playout's 60 s"
        );
    }
    if session.invalid() > 0 {
        tracing::warn!(
            invalid = session.invalid(),
            "invalid messages of the Media Streams app ignored"
        );
    }
    if session.unsent() > 0 {
        tracing::warn!(
            dropped = session.unsent(),
            "media events to the Media Streams app dropped: it did not keep up"
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

/// Hands the writer what the session has queued, as much as its queue has room for (the
/// session drops the caller's audio, never a control event, when it is short); with no
/// connection the events are dropped.
fn transmit(session: &mut StreamsSession, to_app: Option<&mpsc::Sender<Outgoing>>) {
    match to_app {
        Some(tx) => {
            while let Some(event) = session.poll_transmit(tx.capacity()) {
                if tx
                    .try_send((Message::text(event.text), event.arrived))
                    .is_err()
                {
                    break;
                }
            }
        }
        None => while session.poll_transmit(usize::MAX).is_some() {},
    }
}

/// Queues a close frame (the writer ends with it).
fn close(to_app: &Option<mpsc::Sender<Outgoing>>, code: CloseCode, reason: &str) {
    if let Some(tx) = to_app {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        let _ = tx.try_send((Message::Close(Some(frame)), None));
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
