//! # dialtone-engine — one call, end to end
//!
//! [`Engine::dispatch`] resolves an agent's caller ID and trunk, writes the call row (status
//! `queued`) before anything leaves, and starts the call's task: bind an RTP port, offer SDP,
//! dial through the SIP user agent, follow the call (`dialing` → `ringing` → `in_progress`),
//! run the media and the agent's brain once answered, and write the outcome (status, end
//! reason, who ended it, SIP details, media statistics). Each step is committed before the next
//! is taken; storage refuses steps backwards. Each call runs inside a `tracing` span with its
//! id and SIP Call-ID.
//!
//! Brains available in this build: `builtin:echo` (the caller hears itself, full duplex through
//! the media pipeline).

mod brains;
pub mod tts;
pub mod webhooks;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_media::{
    Direction, MediaCall, MediaCodec, MediaConfig, MediaEngine, MediaEvent, PortPool,
};
use dialtone_sdp::{
    AudioCodec, LocalMedia, NegotiatedSession, SessionDescription, build_offer, negotiate_answer,
};
pub use dialtone_sip_ua::RegistrationState;
use dialtone_sip_ua::{
    CallEvent, Credentials, DialRequest, EndReason, Party, SipUa, Transport, Trunk, UaEvent,
};
use dialtone_speech::{AmdConfig, BargeIn, SpeechConfig};

use brains::{BrainContext, BrainInput, BrainRequest, Builtin};
use dialtone_storage::{
    CallProgress, CallStatus, Inserted, NewCall, Storage, StorageError, TrunkTransport,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;
use tts::TextToSpeech;
use uuid::Uuid;

/// Errors from dispatching or controlling calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The agent does not exist.
    #[error("agent {agent_id} not found")]
    AgentNotFound {
        /// The id given.
        agent_id: Uuid,
    },
    /// `from_number` is not one of the agent's numbers.
    #[error("from_number {number} is not attached to agent {agent_id}")]
    FromNumberNotAttached {
        /// The number given.
        number: String,
        /// The agent.
        agent_id: Uuid,
    },
    /// The agent has no number to call from.
    #[error("agent {agent_id} has no primary number to call from")]
    NoCallerId {
        /// The agent.
        agent_id: Uuid,
    },
    /// The agent names a brain this build cannot run.
    #[error("brain {brain:?} is not available (builtin:echo, builtin:ivr or grpc://host:port)")]
    BrainUnavailable {
        /// The brain named.
        brain: String,
    },
    /// The call does not exist.
    #[error("call {call_id} not found")]
    CallNotFound {
        /// The id given.
        call_id: Uuid,
    },
    /// The call has already ended.
    #[error("call {call_id} has already ended")]
    CallEnded {
        /// The call.
        call_id: Uuid,
    },
    /// The engine is shutting down.
    #[error("the engine is not accepting calls")]
    ShuttingDown,
    /// The organisation's dispatch rate cap is reached.
    #[error("more than {per_second} dispatches per second; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// The cap.
        per_second: u32,
        /// When a dispatch will be accepted again.
        retry_after: Duration,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(StorageError),
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        EngineError::Storage(e)
    }
}

/// What a dispatch asks for, already validated for shape by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchRequest {
    /// The organisation asking (the agent must be its own).
    pub org_id: Uuid,
    /// The agent.
    pub agent_id: Uuid,
    /// Destination, E.164.
    pub to: String,
    /// Caller-ID override; must be one of the agent's numbers.
    pub from_number: Option<String>,
    /// Replaces the agent's instructions for this call.
    pub instructions: Option<String>,
    /// Context object.
    pub context: Value,
    /// Per-call webhook URL.
    pub webhook_url: Option<String>,
    /// Metadata object.
    pub metadata: Value,
    /// Idempotency key and a hash of the request body: a repeat gets the first call back.
    pub idempotency: Option<(String, String)>,
}

/// What a dispatch did.
#[derive(Debug, Clone, PartialEq)]
pub enum Dispatched {
    /// A new call was accepted and started.
    New(dialtone_storage::Call),
    /// The idempotency key named an earlier call: nothing was dialled again.
    Replayed(dialtone_storage::Call),
}

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Address the RTP sockets bind.
    pub rtp_bind: IpAddr,
    /// Address written in SDP (the public one behind NAT).
    pub rtp_advertised: IpAddr,
    /// First RTP port.
    pub rtp_first_port: u16,
    /// Last RTP port.
    pub rtp_last_port: u16,
    /// Brain of agents that name none.
    pub default_brain: String,
    /// A call whose far end sends no RTP for this long is ended (`rtp_timeout`).
    pub rtp_timeout: Duration,
    /// How long a call may wait in `queued` for a slot under its organisation's concurrency
    /// cap before it fails (`queue_timeout`).
    pub queue_timeout: Duration,
}

/// The engine; share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    storage: Storage,
    ua: Arc<SipUa>,
    ports: Arc<PortPool>,
    media: Arc<MediaEngine>,
    config: EngineConfig,
    live: Mutex<HashMap<Uuid, mpsc::UnboundedSender<()>>>,
    accepting: std::sync::atomic::AtomicBool,
    changes: tokio::sync::broadcast::Sender<Uuid>,
    /// Per organisation: its concurrency cap and the slots under it (FIFO).
    org_slots: Mutex<HashMap<Uuid, (u32, Arc<tokio::sync::Semaphore>)>>,
    /// Per organisation: tokens left and when they were counted (rate cap).
    org_rates: Mutex<HashMap<Uuid, (f64, std::time::Instant)>>,
    /// Registrations kept with trunks that ask for one.
    registrations: Mutex<HashMap<Uuid, dialtone_sip_ua::Registration>>,
    /// Text to speech for the built-in brains.
    tts: Arc<dyn TextToSpeech>,
}

fn trunk_for_ua(t: &dialtone_storage::Trunk) -> Trunk {
    let transport = match t.transport {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
    };
    let mut trunk = Trunk::new(t.name.clone(), t.host.clone(), transport);
    trunk.port = Some(t.port);
    trunk.credentials = t.username.clone().map(|username| Credentials {
        username,
        password: t.password.clone().unwrap_or_default(),
        realm: t.realm.clone(),
    });
    trunk.from_domain = t.from_domain.clone();
    trunk.max_concurrent_calls = t.max_concurrent_calls;
    trunk.max_calls_per_second = t.max_calls_per_second;
    trunk
}

fn text_setting(config: &Value, key: &str) -> Option<String> {
    config.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn seconds_setting(config: &Value, key: &str, default: u64) -> Duration {
    Duration::from_secs(config.get(key).and_then(Value::as_u64).unwrap_or(default))
}

impl Engine {
    /// An engine over `storage` placing calls through `ua`, their media on `media`'s workers.
    pub fn new(
        storage: Storage,
        ua: Arc<SipUa>,
        media: Arc<MediaEngine>,
        config: EngineConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            ports: PortPool::new(config.rtp_bind, config.rtp_first_port, config.rtp_last_port),
            media,
            storage,
            ua,
            config,
            live: Mutex::new(HashMap::new()),
            accepting: std::sync::atomic::AtomicBool::new(true),
            changes: tokio::sync::broadcast::channel(1024).0,
            org_slots: Mutex::new(HashMap::new()),
            org_rates: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
            tts: Arc::new(tts::EspeakNg::default()),
        })
    }

    /// The storage the engine writes to.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Calls whose task is still running.
    pub fn live_calls(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops accepting new dispatches.
    pub fn stop_accepting(&self) {
        self.accepting
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Accepts a call: writes it (status `queued`) and starts it. Returns the stored record.
    pub async fn dispatch(
        self: &Arc<Self>,
        request: DispatchRequest,
    ) -> Result<Dispatched, EngineError> {
        let dispatched = std::time::Instant::now();
        if !self.accepting.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let agent = match self.storage.get_agent(request.agent_id).await {
            Ok(agent) if agent.org_id == request.org_id => agent,
            // Another organisation's agent does not exist for this one.
            Ok(_) | Err(StorageError::NotFound { .. }) => {
                return Err(EngineError::AgentNotFound {
                    agent_id: request.agent_id,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let org = self.storage.get_organization(request.org_id).await?;
        let brain = agent
            .config
            .get("brain")
            .and_then(Value::as_str)
            .unwrap_or(&self.config.default_brain)
            .to_owned();
        if Builtin::named(&brain).is_none() && !brain.starts_with("grpc://") {
            return Err(EngineError::BrainUnavailable { brain });
        }
        let from = match &request.from_number {
            Some(e164) => {
                // An E.164 string or a number's id, either way one of the agent's.
                let mut found = None;
                for id in &agent.number_ids {
                    let n = self.storage.get_number(*id).await?;
                    if n.e164 == *e164 || n.id.to_string() == *e164 {
                        found = Some(n);
                    }
                }
                found.ok_or_else(|| EngineError::FromNumberNotAttached {
                    number: e164.clone(),
                    agent_id: agent.id,
                })?
            }
            None => {
                let id = agent
                    .primary_number_id
                    .or_else(|| agent.number_ids.first().copied())
                    .ok_or(EngineError::NoCallerId { agent_id: agent.id })?;
                self.storage.get_number(id).await?
            }
        };
        let trunk = self.storage.get_trunk(from.trunk_id).await?;
        let instructions = request.instructions.clone().or_else(|| {
            agent
                .config
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let webhook_url = request.webhook_url.clone().or_else(|| {
            agent
                .config
                .get("webhook_url")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let key = request
            .idempotency
            .as_ref()
            .map(|(k, h)| (k.as_str(), h.as_str()));
        // A replay costs no rate: only a call that will be new is counted.
        let replay = match key {
            Some((k, h)) => self.storage.idempotent_replay(org.id, k, h).await?,
            None => None,
        };
        if let Some(call) = replay {
            return Ok(Dispatched::Replayed(call));
        }
        if let Some(per_second) = org.max_calls_per_second {
            self.take_rate_token(org.id, per_second)?;
        }
        let inserted = self
            .storage
            .insert_call_once(
                NewCall {
                    org_id: org.id,
                    agent_id: agent.id,
                    to: request.to.clone(),
                    from_number: from.e164.clone(),
                    trunk_id: trunk.id,
                    instructions,
                    context: request.context,
                    metadata: request.metadata,
                    webhook_url,
                },
                key,
            )
            .await?;
        let call = match inserted {
            Inserted::New(call) => call,
            Inserted::Existing(call) => return Ok(Dispatched::Replayed(call)),
        };
        let (hangup_tx, hangup_rx) = mpsc::unbounded_channel();
        let live = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            live.insert(call.id, hangup_tx);
            live.len()
        };
        metrics::gauge!("dialtone_active_calls").set(live as f64);
        let plan = CallPlan {
            id: call.id,
            org_slots: org
                .max_concurrent_calls
                .map(|cap| self.org_slots(org.id, cap)),
            dispatched,
            to: call.to.clone(),
            from: call.from_number.clone(),
            trunk: Arc::new(trunk_for_ua(&trunk)),
            ring_timeout: seconds_setting(&agent.config, "ring_timeout_seconds", 30),
            max_duration: seconds_setting(&agent.config, "max_duration_seconds", 600),
            speech: speech_setting(&agent.config),
            voicemail: match agent.config.get("voicemail_action") {
                Some(Value::String(a)) if a == "hangup" => brains::Voicemail::HangUp,
                Some(Value::Object(o)) => match o.get("action").and_then(Value::as_str) {
                    Some("hangup") => brains::Voicemail::HangUp,
                    Some("leave_message") => brains::Voicemail::LeaveMessage(
                        o.get("message")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                    _ => brains::Voicemail::Continue,
                },
                _ => brains::Voicemail::Continue,
            },
            brain: brain.clone(),
            instructions: call.instructions.clone(),
            voice: text_setting(&agent.config, "voice"),
            language: text_setting(&agent.config, "language"),
            returns: agent
                .config
                .get("returns")
                .filter(|r| r.is_object())
                .cloned(),
            mask_dtmf: agent.config.get("mask_dtmf").and_then(Value::as_bool) == Some(true),
            session: brains::Session {
                agent_id: agent.id,
                to: call.to.clone(),
                persona: text_setting(&agent.config, "persona").unwrap_or_default(),
                context: call.context.clone(),
                metadata: call.metadata.clone(),
                tools: agent.config.get("tools").cloned().unwrap_or(Value::Null),
            },
        };
        let engine = self.clone();
        let span =
            tracing::info_span!("call", call_id = %call.id, sip_call_id = tracing::field::Empty);
        tokio::spawn(
            async move {
                engine.run(plan, hangup_rx).await;
                let live = {
                    let mut live = engine.live.lock().unwrap_or_else(|e| e.into_inner());
                    live.remove(&call.id);
                    live.len()
                };
                metrics::gauge!("dialtone_active_calls").set(live as f64);
            }
            .instrument(span),
        );
        Ok(Dispatched::New(call))
    }

    /// Starts, restarts or stops the trunk's registration (REGISTER with its credentials,
    /// refreshed before it expires) to match its `register` setting.
    pub fn sync_registration(&self, trunk: &dialtone_storage::Trunk) {
        let mut registrations = self.registrations.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping a registration stops its task.
        registrations.remove(&trunk.id);
        if trunk.register {
            let registration = self.ua.register(Arc::new(trunk_for_ua(trunk)), 3600);
            registrations.insert(trunk.id, registration);
        }
    }

    /// Stops a deleted trunk's registration.
    pub fn stop_registration(&self, trunk_id: Uuid) {
        self.registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&trunk_id);
    }

    /// Where the trunk's registration stands, if it keeps one.
    pub fn registration_state(&self, trunk_id: Uuid) -> Option<RegistrationState> {
        self.registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&trunk_id)
            .map(dialtone_sip_ua::Registration::state)
    }

    /// Starts the registrations of every trunk that asks for one; returns how many.
    pub async fn start_registrations(&self) -> Result<usize, StorageError> {
        let trunks = self.storage.registering_trunks().await?;
        for trunk in &trunks {
            self.sync_registration(trunk);
        }
        Ok(trunks.len())
    }

    /// Takes one dispatch from the organisation's token bucket (`per_second` tokens a second,
    /// as many at most), or says when one will be there.
    fn take_rate_token(&self, org: Uuid, per_second: u32) -> Result<(), EngineError> {
        let rate = f64::from(per_second.max(1));
        let now = std::time::Instant::now();
        let mut rates = self.org_rates.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = rates.entry(org).or_insert((rate, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(EngineError::RateLimited {
                per_second,
                retry_after: Duration::from_secs_f64((1.0 - *tokens) / rate),
            })
        }
    }

    /// The organisation's slots under concurrency cap `cap` (made anew when the cap changed;
    /// calls holding the old slots keep them until they end).
    fn org_slots(&self, org: Uuid, cap: u32) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.org_slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(&org) {
            Some((c, s)) if *c == cap => s.clone(),
            _ => {
                let s = Arc::new(tokio::sync::Semaphore::new(cap as usize));
                slots.insert(org, (cap, s.clone()));
                s
            }
        }
    }

    /// Asks a live call to hang up (CANCEL before answer, BYE after).
    pub async fn hangup(&self, call_id: Uuid) -> Result<(), EngineError> {
        let sender = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&call_id)
            .cloned();
        match sender {
            Some(s) if s.send(()).is_ok() => Ok(()),
            _ => match self.storage.get_call(call_id).await {
                Err(StorageError::NotFound { .. }) => Err(EngineError::CallNotFound { call_id }),
                Ok(_) => Err(EngineError::CallEnded { call_id }),
                Err(e) => Err(e.into()),
            },
        }
    }

    async fn advance(&self, id: Uuid, status: CallStatus, progress: CallProgress) {
        match self.storage.advance_call(id, status, progress).await {
            // Committed: now it may be announced.
            Ok(_) => {
                let _ = self.changes.send(id);
            }
            Err(error) => {
                tracing::error!(%error, status = status.as_str(), "could not record call progress")
            }
        }
    }

    /// Ids of calls as their changes are committed, for watchers (a receiver that lags
    /// misses ids and should re-read what it watches).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }

    async fn fail(
        &self,
        id: Uuid,
        status: CallStatus,
        reason: &str,
        by: &str,
        sip_status: Option<u16>,
    ) {
        tracing::info!(
            status = status.as_str(),
            reason,
            by,
            "call ended without an answer"
        );
        metrics::counter!("dialtone_calls_total", "status" => status.as_str(), "end_reason" => reason.to_owned())
            .increment(1);
        self.advance(
            id,
            status,
            CallProgress {
                end_reason: Some(reason.to_owned()),
                ended_by: Some(by.to_owned()),
                sip_status,
                ..CallProgress::default()
            },
        )
        .await;
    }

    async fn run(&self, plan: CallPlan, mut hangup: mpsc::UnboundedReceiver<()>) {
        // Under the organisation's concurrency cap the call waits in `queued`, in order, for a
        // slot it holds until it ends.
        let _slot = match &plan.org_slots {
            None => None,
            Some(slots) => {
                let waited = tokio::select! {
                    slot = tokio::time::timeout(self.config.queue_timeout, slots.clone().acquire_owned()) => slot,
                    _ = hangup.recv() => {
                        return self.fail(plan.id, CallStatus::Canceled, "canceled", "api", None).await;
                    }
                };
                match waited {
                    Ok(Ok(slot)) => Some(slot),
                    _ => {
                        tracing::warn!("no slot under the organisation's concurrency cap in time");
                        return self
                            .fail(plan.id, CallStatus::Failed, "queue_timeout", "engine", None)
                            .await;
                    }
                }
            }
        };
        let port = match self.ports.bind() {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(%error, "no RTP port");
                return self
                    .fail(
                        plan.id,
                        CallStatus::Failed,
                        "media_unavailable",
                        "engine",
                        None,
                    )
                    .await;
            }
        };
        let mut local = LocalMedia::new(self.config.rtp_advertised, port.port());
        local.codecs = vec![AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus];
        let session_id = u64::from(port.port()) << 32 | u64::from(plan.id.as_u128() as u32);
        let offer = build_offer(&local, session_id, 1);
        let mut sdp_version = 1u64;
        let mut current: Option<NegotiatedSession> = None;
        let mut request = DialRequest::new(plan.trunk.clone(), plan.from.clone(), plan.to.clone());
        request.sdp_offer = Some(offer.to_string().into_bytes());
        request.ring_timeout = plan.ring_timeout;
        request
            .extra_headers
            .push(("X-Dialtone-Call-Id".into(), plan.id.to_string()));
        let mut call = match self.ua.dial(request).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "dial refused");
                return self
                    .fail(plan.id, CallStatus::Failed, "dial_refused", "engine", None)
                    .await;
            }
        };
        let mut port = Some(port);
        let mut media: Option<MediaCall> = None;
        let mut brain: Option<tokio::task::JoinHandle<()>> = None;
        let mut hangup_by_api = false;
        let (brain_tx, mut brain_rx) = mpsc::unbounded_channel();
        let (brain_inputs, brain_inputs_rx) = mpsc::unbounded_channel::<BrainInput>();
        let mut brain_inputs_rx = Some(brain_inputs_rx);
        let max_duration = tokio::time::sleep(Duration::from_secs(86_400));
        tokio::pin!(max_duration);
        let mut duration_reason: Option<&'static str> = None;
        loop {
            let event = tokio::select! {
                e = call.next_event() => e,
                Some(()) = hangup.recv() => {
                    hangup_by_api = true;
                    let _ = call.hang_up();
                    continue;
                }
                Some(request) = brain_rx.recv() => {
                    match request {
                        BrainRequest::HangUp { reason } => {
                            tracing::info!(reason, "the brain hangs up");
                            duration_reason = Some(reason);
                            let _ = call.hang_up();
                        }
                        BrainRequest::SendDtmf(digits) => {
                            if let Some(sent) = media.as_ref().map(|m| m.send_dtmf(&digits))
                                && let Err(error) = sent.await
                            {
                                tracing::warn!(%error, "the brain's digits cannot be sent");
                            }
                        }
                    }
                    continue;
                }
                Some(event) = next_media_event(&mut media) => {
                    match event {
                        MediaEvent::RtpTimeout { silent_for } => {
                            tracing::warn!(?silent_for, "no RTP from the far end; hanging up");
                            duration_reason = Some("rtp_timeout");
                            let _ = call.hang_up();
                        }
                        MediaEvent::Dtmf { event, .. } => {
                            if let dialtone_rtp::DtmfEvent::Ended { digit, .. } = event {
                                let shown = if plan.mask_dtmf { '*' } else { digit };
                                tracing::info!(digit = %shown, "DTMF");
                                let _ = brain_inputs.send(BrainInput::Dtmf(digit));
                            }
                        }
                        MediaEvent::FarEndBye => tracing::info!("far end sent RTCP BYE"),
                    }
                    continue;
                }
                _ = &mut max_duration, if media.is_some() => {
                    duration_reason = Some("max_duration");
                    let _ = call.hang_up();
                    max_duration.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(86_400));
                    continue;
                }
            };
            let Some(event) = event else { break };
            match event {
                UaEvent::Attempt { sip_call_id, .. } => {
                    metrics::histogram!("dialtone_dispatch_to_invite_seconds")
                        .record(plan.dispatched.elapsed().as_secs_f64());
                    tracing::Span::current().record("sip_call_id", sip_call_id.as_str());
                    self.advance(
                        plan.id,
                        CallStatus::Dialing,
                        CallProgress {
                            sip_call_id: Some(sip_call_id),
                            ..CallProgress::default()
                        },
                    )
                    .await;
                }
                UaEvent::Call(CallEvent::Ringing { .. } | CallEvent::EarlyMedia { .. }) => {
                    self.advance(plan.id, CallStatus::Ringing, CallProgress::default())
                        .await;
                }
                UaEvent::Call(CallEvent::Answered { sdp }) => {
                    let negotiated = sdp
                        .as_deref()
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .and_then(|s| SessionDescription::parse(s).ok())
                        .ok_or(())
                        .and_then(|answer| negotiate_answer(&offer, &answer).map_err(|_| ()));
                    let Ok(session) = negotiated else {
                        tracing::warn!("answer SDP unusable; hanging up");
                        duration_reason = Some("incompatible_media");
                        let _ = call.hang_up();
                        continue;
                    };
                    let codec = match session.codec.codec {
                        AudioCodec::Pcma => MediaCodec::Pcma,
                        AudioCodec::Opus => MediaCodec::Opus,
                        _ => MediaCodec::Pcmu,
                    };
                    let Some(bound) = port.take() else { continue };
                    // The random bits of the v7 id seed SSRC, sequence and timestamp.
                    let random = plan.id.as_u128();
                    let started = self.media.start(
                        bound,
                        MediaConfig {
                            remote: session.remote_rtp,
                            remote_rtcp: session.remote_rtcp,
                            rtcp_mux: session.rtcp_mux,
                            codec,
                            send_payload_type: session.codec.send_payload_type,
                            receive_payload_type: session.codec.receive_payload_type,
                            telephone_event: session.telephone_event,
                            rtp_timeout: self.config.rtp_timeout,
                            record: None,
                            ssrc: random as u32,
                            initial_sequence: (random >> 32) as u16,
                            initial_timestamp: (random >> 16) as u32,
                            cname: format!("dialtone-{}", plan.id),
                        },
                    );
                    let mut m = match started {
                        Ok(m) => m,
                        Err(error) => {
                            tracing::error!(%error, "media did not start; hanging up");
                            duration_reason = Some("media_unavailable");
                            let _ = call.hang_up();
                            continue;
                        }
                    };
                    let context = BrainContext {
                        storage: self.storage.clone(),
                        call_id: plan.id,
                        speech: plan.speech,
                        voicemail: plan.voicemail.clone(),
                        requests: brain_tx.clone(),
                        inputs: brain_inputs_rx
                            .take()
                            .unwrap_or_else(|| mpsc::unbounded_channel().1),
                        instructions: plan.instructions.clone(),
                        voice: plan.voice.clone(),
                        language: plan.language.clone(),
                        returns: plan.returns.clone(),
                        mask_dtmf: plan.mask_dtmf,
                        tts: self.tts.clone(),
                    };
                    brain = match Builtin::named(&plan.brain) {
                        Some(builtin) => brains::start(builtin, &mut m, context),
                        None => {
                            brains::start_remote(&plan.brain, &mut m, context, plan.session.clone())
                        }
                    };
                    media = Some(m);
                    tracing::info!(codec = %session.codec.name, "answered");
                    metrics::histogram!("dialtone_setup_seconds")
                        .record(plan.dispatched.elapsed().as_secs_f64());
                    current = Some(session);
                    max_duration
                        .as_mut()
                        .reset(tokio::time::Instant::now() + plan.max_duration);
                    self.advance(plan.id, CallStatus::InProgress, CallProgress::default())
                        .await;
                }
                UaEvent::Call(CallEvent::RemoteOffer { sdp, .. }) => {
                    sdp_version += 1;
                    let answered = answer_remote_offer(
                        sdp.as_deref(),
                        &local,
                        current.as_ref(),
                        (session_id, sdp_version),
                    );
                    match answered {
                        Some((answer, negotiated)) => {
                            if let Some(m) = &media {
                                m.redirect(Direction {
                                    sending: negotiated.direction.sends(),
                                    receiving: negotiated.direction.receives(),
                                    remote: negotiated.remote_rtp,
                                });
                            }
                            tracing::info!(hold = negotiated.on_hold, "answered a re-offer");
                            let _ = call.answer_offer(answer.into_bytes());
                            current = Some(negotiated);
                        }
                        None => {
                            tracing::warn!("refusing a re-offer we cannot take");
                            let _ = call.reject_offer(488);
                        }
                    }
                }
                UaEvent::Call(CallEvent::Failed { status, reason }) => {
                    let (state, by) = match reason {
                        _ if hangup_by_api => (CallStatus::Canceled, "api"),
                        EndReason::Busy => (CallStatus::Busy, "callee"),
                        EndReason::NoAnswer => (CallStatus::NoAnswer, "engine"),
                        EndReason::Rejected | EndReason::Unavailable => {
                            (CallStatus::Failed, "callee")
                        }
                        _ => (CallStatus::Failed, "trunk"),
                    };
                    let code = if hangup_by_api {
                        "canceled"
                    } else {
                        reason.as_str()
                    };
                    self.fail(plan.id, state, duration_reason.unwrap_or(code), by, status)
                        .await;
                }
                UaEvent::Call(CallEvent::Ended { by, reason }) => {
                    if let Some(mut b) = brain.take() {
                        // The brain hears how the call ended, and has a moment to finish.
                        let _ = brain_inputs.send(BrainInput::Ended {
                            by: match (by, hangup_by_api) {
                                (Party::Remote, _) => "callee",
                                (Party::Local, true) => "api",
                                (Party::Local, false) => "agent",
                            },
                            reason: duration_reason.unwrap_or(reason.as_str()),
                        });
                        if tokio::time::timeout(Duration::from_millis(500), &mut b)
                            .await
                            .is_err()
                        {
                            b.abort();
                        }
                    }
                    let stats = match media.take() {
                        Some(m) => Some(m.stop().await),
                        None => None,
                    };
                    let ended_by = match (by, hangup_by_api, duration_reason) {
                        (Party::Remote, ..) => "callee",
                        (Party::Local, true, _) => "api",
                        (Party::Local, false, _) => "agent",
                    };
                    let media_json = stats.and_then(|s| serde_json::to_value(s).ok());
                    tracing::info!(ended_by, "call ended");
                    let code = duration_reason.unwrap_or(reason.as_str()).to_owned();
                    metrics::counter!("dialtone_calls_total", "status" => "completed", "end_reason" => code)
                        .increment(1);
                    if let Some(s) = stats {
                        metrics::histogram!("dialtone_jitter_buffer_ms")
                            .record(f64::from(s.jitter_buffer_ms));
                        metrics::counter!("dialtone_concealed_frames_total")
                            .increment(s.concealed_frames);
                        metrics::counter!("dialtone_inbound_ring_overflows_total")
                            .increment(s.inbound_overflow);
                        metrics::counter!("dialtone_outbound_ring_underflows_total")
                            .increment(s.outbound_underflow);
                    }
                    self.advance(
                        plan.id,
                        CallStatus::Completed,
                        CallProgress {
                            end_reason: Some(duration_reason.unwrap_or(reason.as_str()).to_owned()),
                            ended_by: Some(ended_by.to_owned()),
                            media: media_json,
                            ..CallProgress::default()
                        },
                    )
                    .await;
                }
                _ => {}
            }
        }
    }
}

/// The resolved plan of one call.
#[derive(Debug, Clone)]
struct CallPlan {
    id: Uuid,
    /// The organisation's concurrency slots, when it has a cap.
    org_slots: Option<Arc<tokio::sync::Semaphore>>,
    dispatched: std::time::Instant,
    to: String,
    from: String,
    trunk: Arc<Trunk>,
    ring_timeout: Duration,
    max_duration: Duration,
    /// The speech loop's settings from the agent (AMD, barge-in, endpointing, silence guard).
    speech: SpeechConfig,
    /// What to do when a machine answers.
    voicemail: brains::Voicemail,
    /// The brain that runs the call.
    brain: String,
    /// The effective instructions.
    instructions: Option<String>,
    /// The agent's voice and language.
    voice: Option<String>,
    language: Option<String>,
    /// The agent's `returns` schema.
    returns: Option<Value>,
    /// Mask digits in transcripts and logs.
    mask_dtmf: bool,
    /// What an external brain is told at the start.
    session: brains::Session,
}

/// The agent's `amd` setting: `true`, or an object of thresholds in ms (`initial_silence_ms`,
/// `greeting_ms`, `after_greeting_silence_ms`, `total_analysis_time_ms`, `maximum_words`).
fn amd_setting(config: &Value) -> Option<AmdConfig> {
    let ms = |o: &serde_json::Map<String, Value>, key: &str, default: Duration| {
        o.get(key)
            .and_then(Value::as_u64)
            .map_or(default, Duration::from_millis)
    };
    match config.get("amd")? {
        Value::Bool(true) => Some(AmdConfig::default()),
        Value::Object(o) => {
            let d = AmdConfig::default();
            Some(AmdConfig {
                initial_silence: ms(o, "initial_silence_ms", d.initial_silence),
                greeting: ms(o, "greeting_ms", d.greeting),
                after_greeting_silence: ms(
                    o,
                    "after_greeting_silence_ms",
                    d.after_greeting_silence,
                ),
                total_analysis_time: ms(o, "total_analysis_time_ms", d.total_analysis_time),
                maximum_words: o
                    .get("maximum_words")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(d.maximum_words),
                ..d
            })
        }
        _ => None,
    }
}

/// The speech loop's settings from the agent: `amd`, `barge_in` (`"off"`, `"on"` or a minimum
/// of speech in ms), `endpointing_silence_ms` and `silence_timeout_seconds` (the guard: a
/// prompt, then a hang-up with `silence_timeout`).
fn speech_setting(config: &Value) -> SpeechConfig {
    let d = SpeechConfig::default();
    SpeechConfig {
        amd: amd_setting(config),
        barge_in: match config.get("barge_in") {
            Some(Value::String(s)) if s == "off" => BargeIn::Off,
            Some(Value::Number(n)) => n
                .as_u64()
                .map_or(d.barge_in, |ms| BargeIn::After(Duration::from_millis(ms))),
            _ => d.barge_in,
        },
        endpointing_silence: config
            .get("endpointing_silence_ms")
            .and_then(Value::as_u64)
            .map_or(d.endpointing_silence, Duration::from_millis),
        silence_timeout: config
            .get("silence_timeout_seconds")
            .and_then(Value::as_u64)
            .map(Duration::from_secs),
        ..d
    }
}

/// Our answer to a re-INVITE/UPDATE offer (hold, resume, refresh, a new address), from the
/// current session. The media pipeline cannot switch codec mid-call, so an offer that drops the
/// current codec is refused (`None`, answered 488). An offerless re-INVITE gets our current
/// description as the offer.
fn answer_remote_offer(
    offer: Option<&[u8]>,
    local: &LocalMedia,
    current: Option<&NegotiatedSession>,
    (session_id, version): (u64, u64),
) -> Option<(String, NegotiatedSession)> {
    let current = current?;
    let Some(offer) = offer else {
        let mut ours = local.clone();
        ours.codecs = vec![current.codec.codec];
        return Some((
            build_offer(&ours, session_id, version).to_string(),
            current.clone(),
        ));
    };
    let offer = SessionDescription::parse(std::str::from_utf8(offer).ok()?).ok()?;
    let (answer, negotiated) =
        dialtone_sdp::answer_offer(&offer, local, Some(current), session_id, version).ok()?;
    (negotiated.codec.codec == current.codec.codec).then(|| (answer.to_string(), negotiated))
}

/// The next event of the call's media; pending while there is none.
async fn next_media_event(media: &mut Option<MediaCall>) -> Option<MediaEvent> {
    match media {
        Some(m) => m.next_event().await,
        None => std::future::pending().await,
    }
}
