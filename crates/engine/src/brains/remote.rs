//! An external brain: an AgentBridge server (`grpc://host:port`) holds the conversation over
//! one bidirectional gRPC stream per call; the engine runs the speech loop and the engine's
//! duties (voicemail, silence guard) and relays audio, events and the brain's actions.

use std::time::{Duration, Instant};

use dialtone_media::{FrameReceiver, FrameSender, MediaCall};
use dialtone_model::TranscriptLine;
use dialtone_proto::json::{from_struct, to_struct};
use dialtone_speech::{FRAME_SAMPLES, SpeechEvent};
use dialtone_storage::EndReason;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

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

/// Converts PCM16LE `bytes` at `rate` to 16 kHz (whole 20 ms frames, the last padded).
fn to_16k(bytes: &[u8], rate: u32) -> Vec<i16> {
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| {
            i16::from_le_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    let rate = if rate == 0 { 16_000 } else { rate };
    if rate == 16_000 {
        return samples;
    }
    let Ok(mut resampler) = dialtone_codec::Resampler::new(rate, 16_000) else {
        return Vec::new();
    };
    let (n_in, n_out) = (resampler.input_samples(), resampler.output_samples());
    let mut out = Vec::with_capacity(samples.len() * 16_000 / rate as usize + n_out);
    let mut frame = vec![0i16; n_out];
    for chunk in samples.chunks(n_in) {
        let mut input = chunk.to_vec();
        input.resize(n_in, 0);
        if resampler.process(&input, &mut frame).is_ok() {
            out.extend_from_slice(&frame);
        }
    }
    out
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
        MachineDetection, PlayoutDone, ResultRejected, SessionStart, SpeechEnded, SpeechStarted,
        TransferFailed,
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
                        run.speech.play(to_16k(&play.pcm, play.sample_rate), play.mark);
                    }
                    Some(Action::Speak(speak)) => {
                        run.transcript.push(line("agent", &speak.text));
                        speak_queue.push_back((speak.text, speak.mark));
                    }
                    Some(Action::Clear(_)) => {
                        run.speech.clear_playout();
                        run.outbound.clear();
                        speak_queue.clear();
                        run.speaking = None;
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
                Some(audio) => run.speech.play(audio, None),
                None => {
                    if let Some((_, engine_mark)) = run.speaking.take() {
                        // The synthesis ended: its mark follows its last sample (the brain's
                        // mark for its speech, the engine's for its own prompts).
                        let mark = tts_mark.take().unwrap_or_else(|| engine_mark.to_owned());
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
                SpeechEvent::BargeIn { cut, .. } => {
                    run.outbound.clear();
                    cut.mark.filter(|m| m != INTERNAL_MARK).map(|mark| {
                        Event::PlayoutDone(PlayoutDone {
                            mark,
                            interrupted: true,
                            played_ms: (cut.played_samples / 16) as u32,
                        })
                    })
                }
                SpeechEvent::PlayoutDone { mark } if mark == "apology" && failed => {
                    let _ = run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::BrainError,
                    });
                    None
                }
                SpeechEvent::PlayoutDone { mark } if mark == INTERNAL_MARK => None,
                SpeechEvent::PlayoutDone { mark } => Some(Event::PlayoutDone(PlayoutDone {
                    mark,
                    interrupted: false,
                    played_ms: 0,
                })),
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

/// The mark the engine puts after unmarked speech (never reported to the brain).
/// How long a brain has to take the conversation (connection, HTTP/2 and the `Converse` stream)
/// before the caller hears the apology and the call ends as `brain_error`.
pub const BRAIN_CONNECT_LIMIT: Duration = Duration::from_secs(5);

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
