//! An external brain: an AgentBridge server (`grpc://host:port`) holds the conversation over
//! one bidirectional gRPC stream per call; the engine runs the speech loop and the engine's
//! duties (voicemail, silence guard) and relays audio, events and the brain's actions.

use std::time::{Duration, Instant};

use dialtone_media::{FrameReceiver, FrameSender, MediaCall};
use dialtone_model::TranscriptLine;
use dialtone_proto::json::{from_struct, to_struct};
use dialtone_speech::{FRAME_SAMPLES, SAMPLE_RATE, SpeechEvent};
use dialtone_storage::EndReason;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use super::playout_marks::{MarkReport, PlayoutMarks};
use super::{
    APOLOGY, BrainContext, BrainInput, BrainRequest, Duties, IvrStep, Run, SilenceClock,
    check_result, line, next_chunk,
};

/// The call as an external brain is told about it at the start.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) agent_id: Uuid,
    pub(crate) to: String,
    /// Our caller ID on an outbound call, the caller on an inbound one.
    pub(crate) from: String,
    pub(crate) direction: dialtone_model::Direction,
    pub(crate) persona: String,
    pub(crate) context: Value,
    pub(crate) metadata: Value,
    pub(crate) tools: Value,
    /// Headers on a websocket brain's upgrade request.
    pub(crate) brain_headers: std::collections::BTreeMap<String, String>,
}

/// Starts an external brain at `address` (`grpc://host:port`) on the call's media, on
/// `runtime` (in the call's span).
/// `vet` is `Some(policy)` for an address a tenant gave (the agent's `brain`): it is
/// resolved once and checked by the outbound-address policy before the connection, which goes
/// to the vetted address; `None` for the operator's own default brain.
pub(crate) fn start_remote(
    runtime: &tokio::runtime::Handle,
    address: &str,
    vet: Option<crate::outbound::PrivateDestinations>,
    media: &mut MediaCall,
    context: BrainContext,
    session: Session,
) -> Option<tokio::task::JoinHandle<()>> {
    let inbound = media.take_inbound()?;
    let outbound = media.take_outbound()?;
    let endpoint = format!(
        "http://{}",
        address.strip_prefix("grpc://").unwrap_or(address)
    );
    Some(
        runtime.spawn(
            run_remote(endpoint, vet, inbound, outbound, context, session).in_current_span(),
        ),
    )
}

/// A brain's `Play` clip, PCM16LE `bytes` at `rate` (0 meaning 16 kHz), at the speech loop's
/// 16 kHz: exactly as long, not shifted (each clip resampled on its own, its end flushed). A
/// rate the resampler does not know plays nothing, with a warning.
fn to_16k(bytes: &[u8], rate: u32) -> Vec<i16> {
    let rate = if rate == 0 { SAMPLE_RATE } else { rate };
    dialtone_codec::resample_pcm_clip(bytes, rate, SAMPLE_RATE).unwrap_or_else(|error| {
        tracing::warn!(%error, "the brain's audio is not played");
        Vec::new()
    })
}

async fn run_remote(
    endpoint: String,
    vet: Option<crate::outbound::PrivateDestinations>,
    mut inbound: FrameReceiver,
    outbound: FrameSender,
    context: BrainContext,
    session: Session,
) {
    use dialtone_proto::agent_bridge_service_client::AgentBridgeServiceClient;
    use dialtone_proto::converse_request::Event;
    use dialtone_proto::converse_response::Action;
    use dialtone_proto::{
        AudioFormat, Beep, CallEnded, CallerAudio, ConverseRequest, DtmfDigit, GreetingEnded,
        MachineDetection, ResultRejected, SessionStart, SpeechEnded, SpeechStarted, TransferFailed,
    };

    let answered = Instant::now();
    let mut run = Run::new(context, outbound, answered, IvrStep::Prompting);
    let (to_brain, requests) = mpsc::channel::<ConverseRequest>(256);
    let send = |event: Event| ConverseRequest { event: Some(event) };
    let start = SessionStart {
        call_id: run.context.call_id.to_string(),
        agent_id: session.agent_id.to_string(),
        to: session.to.clone(),
        from: session.from.clone(),
        direction: session.direction.as_str().to_owned(),
        persona: session.persona.clone(),
        voice: run.context.voice.clone().unwrap_or_default(),
        language: run.context.language.clone().unwrap_or_default(),
        instructions: run.context.instructions.clone().unwrap_or_default(),
        context: Some(to_struct(&session.context)),
        metadata: Some(to_struct(&session.metadata)),
        returns: run.context.returns.as_ref().map(to_struct),
        tools: session
            .tools
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .map(|t| dialtone_proto::Tool {
                        name: t
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .into(),
                        description: t
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .into(),
                        parameters: t.get("parameters").map(to_struct),
                        url: t.get("url").and_then(Value::as_str).map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        audio_format: Some(AudioFormat {
            sample_rate: 16_000,
            frame_ms: 20,
            encoding: "pcm16le".into(),
        }),
    };
    let _ = to_brain.try_send(send(Event::Start(start)));
    let connected = tokio::time::timeout(BRAIN_CONNECT_LIMIT, async {
        let target = match &vet {
            Some(policy) => crate::outbound::vetted_endpoint(&endpoint, policy).await?,
            None => endpoint.clone(),
        };
        let mut client = AgentBridgeServiceClient::connect(target).await?;
        let response = client
            .converse(tokio_stream::wrappers::ReceiverStream::new(requests))
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response.into_inner())
    })
    .await;
    let mut replies = match connected {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::warn!(%error, %endpoint, "the brain cannot be reached");
            None
        }
        Err(_) => {
            tracing::warn!(%endpoint, "the brain did not answer in time");
            None
        }
    };
    let mut failed = replies.is_none();
    let mut duties = Duties::new(answered);
    let mut got_result = false;
    let mut speak_queue: std::collections::VecDeque<(String, Option<String>)> =
        std::collections::VecDeque::new();
    let mut tts_mark: Option<String> = None;
    let mut marks = PlayoutMarks::default();
    if failed {
        run.say(APOLOGY, "apology");
    }
    let mut clock = SilenceClock::new();
    loop {
        tokio::select! {
            biased;
            frame = inbound.recv() => {
                let Some(frame) = frame else { break };
                let now = Instant::now();
                run.speech.handle_caller_frame(now, &frame.samples);
                clock.heard(now);
                run.duty_timers(&mut duties, now);
                if !failed {
                    let pcm: Vec<u8> = frame.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
                    // A brain that cannot keep up loses audio, never the call.
                    let _ = to_brain.try_send(send(Event::Audio(CallerAudio { pcm })));
                }
            }
            Some(input) = run.context.inputs.recv() => match input {
                BrainInput::Dtmf(digit) if !failed => {
                    let _ = to_brain.try_send(send(Event::Dtmf(DtmfDigit { digit: digit.to_string() })));
                }
                BrainInput::Dtmf(_) => {}
                BrainInput::TransferFailed { to, sip_status, reason, message } if !failed => {
                    let _ = to_brain.try_send(send(Event::TransferFailed(TransferFailed {
                        to,
                        sip_status: sip_status.map(u32::from),
                        reason: reason.map_or("invalid", |r| r.as_str()).into(),
                        message,
                    })));
                }
                BrainInput::TransferFailed { .. } => {}
                BrainInput::Ended { by, reason } => {
                    if !failed {
                        let _ = to_brain.try_send(send(Event::Ended(CallEnded {
                            by: by.as_str().into(),
                            reason: reason.as_str().into(),
                        })));
                    }
                    break;
                }
            },
            reply = next_reply(&mut replies) => match reply {
                Ok(Some(message)) => match message.action {
                    Some(Action::Play(_) | Action::Speak(_) | Action::Clear(_)) if duties.voicemail() => {
                        tracing::debug!("the brain's speech is dropped: the engine leaves the voicemail message");
                    }
                    Some(Action::Play(play)) => {
                        let audio = to_16k(&play.pcm, play.sample_rate);
                        marks.clip(audio.len(), play.mark.clone());
                        run.speech.play(audio, play.mark);
                    }
                    Some(Action::Speak(speak)) => {
                        run.transcript.push(line("agent", &speak.text));
                        speak_queue.push_back((speak.text, speak.mark));
                    }
                    Some(Action::Clear(_)) => {
                        let dropped = run.speech.clear_playout().map_or(0, |cut| cut.dropped_samples);
                        run.outbound.clear();
                        for report in stop_speech(&mut run, &mut marks, dropped, &mut tts_mark, &mut speak_queue) {
                            let _ = to_brain.try_send(send(playout_done(report)));
                        }
                    }
                    Some(Action::SendDtmf(dtmf)) => {
                        let _ = run.context.requests.send(BrainRequest::SendDtmf(dtmf.digits));
                    }
                    Some(Action::HangUp(hang_up)) => {
                        let reason = match hang_up.reason.as_str() {
                            "" | "completed" => EndReason::Completed,
                            "voicemail" => EndReason::Voicemail,
                            "voicemail_message" => EndReason::VoicemailMessage,
                            _ => EndReason::AgentHangup,
                        };
                        let _ = run.context.requests.send(BrainRequest::HangUp { reason });
                    }
                    Some(Action::Transfer(transfer)) => {
                        // An unknown mode is the machine's to refuse, naming `mode`.
                        let mode = transfer.mode.as_deref().map(|m| m.parse().map_err(|_| m.to_owned()));
                        match mode.transpose() {
                            Ok(mode) => {
                                let _ = run.context.requests.send(BrainRequest::Transfer { to: transfer.to, mode });
                            }
                            Err(unknown) => {
                                let _ = to_brain.try_send(send(Event::TransferFailed(TransferFailed {
                                    to: transfer.to,
                                    sip_status: None,
                                    reason: "invalid".into(),
                                    message: format!("unknown transfer mode {unknown:?}: \"refer\" or \"bridge\""),
                                })));
                            }
                        }
                    }
                    Some(Action::Transcript(t)) => {
                        run.transcript.push(TranscriptLine { role: t.role, text: t.text, at: t.at, ..TranscriptLine::default() });
                        run.save_transcript().await;
                    }
                    Some(Action::Result(r)) => {
                        let result = r.result.as_ref().map(from_struct).unwrap_or(Value::Null);
                        match check_result(run.context.returns.as_ref(), &result) {
                            Ok(()) => {
                                got_result = true;
                                let _ = run.context.storage.set_result(run.context.call_id, Some(&result), None).await;
                            }
                            Err(error) => {
                                let _ = run.context.storage.set_result(run.context.call_id, None, Some(&error)).await;
                                let _ = to_brain.try_send(send(Event::ResultRejected(ResultRejected { error })));
                            }
                        }
                    }
                    None => {}
                },
                Ok(None) | Err(_) => {
                    // The brain hung up its end (or broke) while the call is live.
                    tracing::warn!(error = ?reply.err(), "the brain's stream ended mid-call");
                    replies = None;
                    failed = true;
                    speak_queue.clear();
                    if !duties.voicemail() {
                        // (A voicemail message under way is the engine's: it plays on.)
                        run.speech.clear_playout();
                        run.outbound.clear();
                        run.say(APOLOGY, "apology");
                    }
                }
            },
            chunk = next_chunk(&mut run.speaking) => match chunk {
                Some(audio) => {
                    marks.speech(audio.len());
                    run.speech.play(audio, None);
                }
                None => {
                    if let Some((_, engine_mark)) = run.speaking.take() {
                        // The synthesis ended: its mark follows its last sample (the brain's
                        // mark for its speech, the engine's for its own prompts).
                        let brains = tts_mark.take();
                        let mark = brains.clone().unwrap_or_else(|| engine_mark.to_owned());
                        marks.speech_ended(brains.filter(|m| m != INTERNAL_MARK));
                        run.speech.play(Vec::new(), Some(mark));
                    }
                }
            },
            input = duties.next_input() => run.duty_input(&mut duties, input),
            now = clock.silence() => {
                run.speech.handle_caller_frame(now, &[0; FRAME_SAMPLES]);
                run.duty_timers(&mut duties, now);
            }
        }
        if duties.voicemail() {
            speak_queue.clear();
        }
        if run.speaking.is_none()
            && let Some((text, mark)) = speak_queue.pop_front()
        {
            let c = &run.context;
            run.speaking = Some((
                c.tts
                    .speak(&text, c.voice.as_deref(), c.language.as_deref()),
                "speak",
            ));
            // Unmarked speech still ends with an internal mark, which is not reported.
            tts_mark = Some(mark.unwrap_or_else(|| INTERNAL_MARK.into()));
        }
        while let Some(event) = run.speech.poll_event() {
            if run.duty(&mut duties, &event) {
                continue;
            }
            let forward = match event {
                SpeechEvent::SpeechStarted { .. } => Some(Event::SpeechStarted(SpeechStarted {})),
                SpeechEvent::SpeechEnded { duration, .. } => {
                    Some(Event::SpeechEnded(SpeechEnded {
                        duration_ms: duration.as_millis() as u32,
                    }))
                }
                SpeechEvent::BargeIn { .. } if failed => {
                    // The caller talked over the apology (whose mark the cut dropped): end now.
                    let _ = run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::BrainError,
                    });
                    None
                }
                SpeechEvent::BargeIn { at, cut } => {
                    run.barge_in(at);
                    for report in stop_speech(
                        &mut run,
                        &mut marks,
                        cut.dropped_samples,
                        &mut tts_mark,
                        &mut speak_queue,
                    ) {
                        let _ = to_brain.try_send(send(playout_done(report)));
                    }
                    None
                }
                SpeechEvent::PlayoutDone { mark } if mark == "apology" && failed => {
                    let _ = run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::BrainError,
                    });
                    None
                }
                SpeechEvent::PlayoutDone { mark } => marks.played(&mark).map(playout_done),
                SpeechEvent::Dtmf { digit, .. } => Some(Event::Dtmf(DtmfDigit {
                    digit: digit.to_string(),
                })),
                SpeechEvent::AnsweredBy { verdict } => {
                    Some(Event::MachineDetection(MachineDetection {
                        answered_by: verdict.answered_by.as_str().into(),
                        reason: verdict.reason().as_str().into(),
                    }))
                }
                SpeechEvent::Beep { hz, duration, .. } => Some(Event::Beep(Beep {
                    hz: hz.round() as u32,
                    duration_ms: duration.as_millis() as u32,
                })),
                SpeechEvent::GreetingEnded { silent_for, .. } => {
                    Some(Event::GreetingEnded(GreetingEnded {
                        silent_ms: silent_for.as_millis() as u32,
                    }))
                }
                // AgentBridge has no event that withdraws a start: a start too short to be an
                // utterance is followed by no `speech_ended`, and the next start begins anew.
                SpeechEvent::SpeechDropped { .. } => None,
                _ => None,
            };
            if let Some(event) = forward
                && !failed
            {
                let _ = to_brain.try_send(send(event));
            }
        }
        run.feed_outbound();
        if run.outbound.is_closed() {
            break;
        }
    }
    run.finish_duties(duties).await;
    run.save_transcript().await;
    if !got_result {
        let why = if failed {
            "the brain failed before returning a result"
        } else {
            "the call ended without a result"
        };
        let _ = run
            .context
            .storage
            .set_result(run.context.call_id, None, Some(why))
            .await;
    }
}

/// The brain's speech stops, its playout cleared with `dropped` samples unplayed (a barge-in,
/// or the brain's own clear): the line under synthesis and the lines queued after it go too.
/// Every mark of the brain's still pending, in order, with what of its clip was heard.
fn stop_speech(
    run: &mut Run,
    marks: &mut PlayoutMarks,
    dropped: usize,
    tts_mark: &mut Option<String>,
    speak_queue: &mut std::collections::VecDeque<(String, Option<String>)>,
) -> Vec<MarkReport> {
    run.speaking = None;
    let open_mark = tts_mark.take().filter(|m| m != INTERNAL_MARK);
    let mut reports = marks.cut(dropped, open_mark.as_deref());
    reports.extend(speak_queue.drain(..).filter_map(|(_, mark)| {
        Some(MarkReport {
            mark: mark?,
            interrupted: true,
            played_ms: 0,
        })
    }));
    reports
}

/// The brain is told of its mark.
fn playout_done(report: MarkReport) -> dialtone_proto::converse_request::Event {
    dialtone_proto::converse_request::Event::PlayoutDone(dialtone_proto::PlayoutDone {
        mark: report.mark,
        interrupted: report.interrupted,
        played_ms: report.played_ms,
    })
}

/// How long a brain has to take the conversation (connection, HTTP/2 and the `Converse` stream)
/// before the caller hears the apology and the call ends as `brain_error`.
pub const BRAIN_CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The mark the engine puts after unmarked speech (never reported to the brain).
const INTERNAL_MARK: &str = "\u{0}internal";

/// The brain's next message; pending while there is no stream.
async fn next_reply(
    replies: &mut Option<tonic::Streaming<dialtone_proto::ConverseResponse>>,
) -> Result<Option<dialtone_proto::ConverseResponse>, tonic::Status> {
    match replies {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use dialtone_test_support::audio::{sine, tone_amplitude};

    /// A `Play` clip at `rate`: 60 ms of silence, then a 1 kHz tone to `total_ms` (not a whole
    /// number of 20 ms frames).
    fn clip(rate: u32, total_ms: usize) -> Vec<u8> {
        let per_ms = rate as usize / 1000;
        let mut samples = vec![0i16; total_ms * per_ms];
        sine(rate, 1000.0, 10_000.0, 0, &mut samples[60 * per_ms..]);
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn a_played_clip_comes_to_16k_as_long_as_it_was_with_its_tone_in_place() {
        for (rate, given) in [
            (8_000, 8_000),
            (24_000, 24_000),
            (48_000, 48_000),
            (16_000, 0),
        ] {
            let out = to_16k(&clip(rate, 347), given);
            assert_eq!(
                out.len(),
                347 * 16,
                "{rate} Hz: exactly as long, no padded frame"
            );
            let onset = out.iter().position(|s| s.unsigned_abs() > 5000).unwrap();
            assert!(
                onset.abs_diff(60 * 16) <= 8,
                "{rate} Hz: the tone starts at 60 ms, not at sample {onset}"
            );
            let level = |from: usize, to: usize, hz| tone_amplitude(&out[from..to], 16_000, hz);
            assert!(level(0, 880, 1000.0) < 100.0, "{rate} Hz: silence first");
            let tone = level(1040, 5552, 1000.0);
            assert!(
                (tone - 10_000.0).abs() < 300.0,
                "{rate} Hz: the tone at {tone:.0}"
            );
            let last = level(5552 - 320, 5552, 1000.0);
            assert!(
                last > 9000.0,
                "{rate} Hz: the tone to the end, {last:.0} in the last 20 ms"
            );
            let image = level(1040, 5552, 7000.0);
            assert!(image < 100.0, "{rate} Hz: {image:.0} at 7 kHz");
        }
    }

    #[test]
    fn a_clip_at_a_rate_the_engine_does_not_resample_plays_nothing() {
        assert!(to_16k(&clip(8_000, 100), 11_025).is_empty());
    }
}
