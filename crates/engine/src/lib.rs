//! # dialtone-engine — one call, end to end
//!
//! [`Engine::dispatch`] resolves an agent's caller ID and trunk, writes the call row (status
//! `queued`) before anything leaves, and starts the call's task:
//!
//! 1. wait in `queued`, first come first served, for a slot under the organisation's
//!    concurrency cap and room under the trunk's concurrency and calls-per-second caps, within
//!    the queue timeout (`queue_timeout`); a hang-up there ends it `canceled`;
//! 2. bind an RTP port, offer SDP, dial through the SIP user agent (`dialing` → `ringing`);
//! 3. on early media (183 with SDP) start the media pipeline and listen: ringback and
//!    announcements are measured onto the record (`early_media_ms`), not given to the brain;
//! 4. at answer (a 2xx without SDP keeps the early answer) start the agent's brain on the
//!    media (`in_progress`), with the agent's maximum duration and the RTP timeout armed;
//! 5. write the outcome: status, end reason and who ended it (`callee`, `agent`, `engine`,
//!    `api`, `trunk`), SIP details and media statistics.
//!
//! Each step is committed before it is announced (watchers, webhooks, logs); storage refuses
//! steps backwards. Each call runs inside a `tracing` span with its id and SIP Call-ID.
//!
//! Brains: `builtin:echo` (the caller hears itself, full duplex through the media pipeline),
//! `builtin:ivr` (speaks the instructions, collects digits) and any AgentBridge server
//! (`grpc://host:port`); see [`tts`] for the engine-side speech. Brains and their speech loops
//! run on [`SpeechWorkers`], a runtime of their own, so that the API, signalling and storage
//! stay prompt on a node busy with conversations.

mod brains;
pub mod outbound;
pub mod tts;
pub mod webhooks;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_media::{
    Direction, FrameReceiver, MediaCall, MediaCodec, MediaConfig, MediaEngine, MediaEvent,
    PortPool, Scheduling,
};
use dialtone_model::{AgentFields, Amd, BargeIn as ModelBargeIn, VoicemailAction};
use dialtone_sdp::{
    AudioCodec, LocalMedia, NegotiatedSession, SessionDescription, build_offer, negotiate_answer,
};
pub use dialtone_sip_ua::RegistrationState;
use dialtone_sip_ua::{
    Admission, CallEvent, Credentials, DialRequest, EndReason as SipEndReason, Party, SipUa,
    Transport, Trunk, UaEvent,
};
use dialtone_speech::{AmdConfig, BargeIn, SpeechConfig};

use brains::{BrainContext, BrainInput, BrainRequest, Builtin};
use dialtone_storage::{
    CallProgress, CallStatus, EndReason, EndedBy, Inserted, NewCall, Storage, StorageError,
    TrunkTransport,
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
    #[error("the daemon is shutting down and takes no new calls; dispatch to another node")]
    ShuttingDown,
    /// The SIP user agent has stopped.
    #[error("the SIP user agent has stopped")]
    SipStopped,
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

/// The threads the calls' speech loops and brains run on: a runtime of their own, so that a
/// node busy with hundreds of conversations still answers its API, writes its records and
/// places new calls at once (the operating system shares the cores between the two runtimes'
/// threads; the mostly idle control side's are served as soon as they wake).
#[derive(Debug)]
pub struct SpeechWorkers {
    handle: tokio::runtime::Handle,
    /// Taken when dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl SpeechWorkers {
    /// Starts `threads` speech threads (0: one per core), scheduled as `scheduling` says
    /// ([`Scheduling::Favoured`]: ahead of the control side's threads for the CPU, so a busy
    /// machine delays new calls' setup rather than the audio of those in progress).
    pub fn new(threads: usize, scheduling: Scheduling) -> std::io::Result<Self> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let warned = std::sync::atomic::AtomicBool::new(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .on_thread_start(move || {
                if !scheduling.apply_to_this_thread()
                    && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        ?scheduling,
                        "speech threads run at their usual priority (not permitted here)"
                    );
                }
            })
            .thread_name("dialtone-speech")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }
}

impl Drop for SpeechWorkers {
    fn drop(&mut self) {
        // The engine may be dropped on a runtime thread, where waiting is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The engine; share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    storage: Storage,
    ua: Arc<SipUa>,
    ports: Arc<PortPool>,
    media: Arc<MediaEngine>,
    config: EngineConfig,
    live: Mutex<HashMap<Uuid, mpsc::UnboundedSender<HangUp>>>,
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
    /// Where the brains run.
    speech: SpeechWorkers,
}

fn trunk_for_ua(t: &dialtone_storage::Trunk) -> Trunk {
    let transport = match t.transport {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
    };
    // Names are unique per organisation only; the caps are kept per name.
    let mut trunk = Trunk::new(format!("{} ({})", t.name, t.id), t.host.clone(), transport);
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

impl Engine {
    /// An engine over `storage` placing calls through `ua`, their media on `media`'s workers
    /// and their brains on `speech`.
    pub fn new(
        storage: Storage,
        ua: Arc<SipUa>,
        media: Arc<MediaEngine>,
        speech: SpeechWorkers,
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
            speech,
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

    /// Ends every live call with end reason `engine_shutdown`: queued calls leave the queue,
    /// ringing ones are canceled, answered ones get a BYE. Returns how many were asked.
    pub fn end_all(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values()
            .filter(|s| s.send(HangUp::Shutdown).is_ok())
            .count()
    }

    /// Whether dispatches are taken (false once a shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the SIP user agent's driver still runs.
    pub async fn sip_running(&self) -> bool {
        self.ua.stats().await.is_ok()
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
        let settings = &agent.config;
        let brain = settings
            .brain
            .clone()
            .unwrap_or_else(|| self.config.default_brain.clone());
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
        let instructions = request
            .instructions
            .clone()
            .or_else(|| settings.instructions.clone());
        let webhook_url = request
            .webhook_url
            .clone()
            .or_else(|| settings.webhook_url.clone());
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
            trunk_name: trunk.name.clone(),
            ring_timeout: settings.ring_timeout(),
            max_duration: settings.max_duration(),
            speech: speech_setting(settings),
            voicemail: match settings.voicemail() {
                VoicemailAction::HangUp => brains::Voicemail::HangUp,
                VoicemailAction::LeaveMessage(message) => brains::Voicemail::LeaveMessage(message),
                VoicemailAction::Continue => brains::Voicemail::Continue,
            },
            brain: brain.clone(),
            instructions: call.instructions.clone(),
            voice: settings.voice.clone(),
            language: settings.language.clone(),
            returns: settings.returns.clone().filter(Value::is_object),
            mask_dtmf: settings.mask_dtmf == Some(true),
            session: brains::Session {
                agent_id: agent.id,
                to: call.to.clone(),
                persona: settings.persona.clone().unwrap_or_default(),
                context: call.context.clone(),
                metadata: call.metadata.clone(),
                tools: settings
                    .tools
                    .as_ref()
                    .and_then(|tools| serde_json::to_value(tools).ok())
                    .unwrap_or(Value::Null),
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
            Some(s) if s.send(HangUp::Api).is_ok() => Ok(()),
            _ => match self.storage.get_call(call_id).await {
                Err(StorageError::NotFound { .. }) => Err(EngineError::CallNotFound { call_id }),
                Ok(_) => Err(EngineError::CallEnded { call_id }),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Ids of calls as their changes are committed, for watchers (a receiver that lags
    /// misses ids and should re-read what it watches).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }

    fn fail(
        progress: &ProgressLog,
        plan: &CallPlan,
        status: CallStatus,
        reason: EndReason,
        by: EndedBy,
        sip_status: Option<u16>,
        media: Option<Value>,
    ) {
        metrics::counter!("dialtone_calls_total", "status" => status.as_str(), "end_reason" => reason.as_str(), "trunk" => plan.trunk_name.clone())
            .increment(1);
        progress.record(
            status,
            CallProgress {
                end_reason: Some(reason),
                ended_by: Some(by),
                sip_status,
                media,
                ..CallProgress::default()
            },
        );
        tracing::info!(
            status = status.as_str(),
            reason = reason.as_str(),
            by = by.as_str(),
            "call ended without an answer"
        );
    }

    /// Waits in `queued`, in order, for a slot under the organisation's concurrency cap and
    /// room under the trunk's caps, both within the queue timeout counted from dispatch.
    /// `None` when the call ended there (canceled by the API, or `queue_timeout`), recorded.
    async fn wait_in_queue(
        &self,
        plan: &CallPlan,
        hangup: &mut mpsc::UnboundedReceiver<HangUp>,
        progress: &ProgressLog,
    ) -> Option<(Option<tokio::sync::OwnedSemaphorePermit>, Admission)> {
        let deadline = tokio::time::Instant::from_std(plan.dispatched) + self.config.queue_timeout;
        let queued = async {
            let org_slot = match &plan.org_slots {
                None => None,
                Some(slots) => {
                    match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
                        Ok(Ok(slot)) => Some(slot),
                        _ => {
                            tracing::warn!(
                                "no slot under the organisation's concurrency cap in time"
                            );
                            return None;
                        }
                    }
                }
            };
            let mut trunk = (*plan.trunk).clone();
            trunk.cap_wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.ua.admit(&trunk).await {
                Ok(admission) => Some((org_slot, admission)),
                Err(error) => {
                    tracing::warn!(%error, "no room under the trunk's caps in time");
                    None
                }
            }
        };
        tokio::select! {
            admitted = queued => {
                if admitted.is_none() {
                    Self::fail(progress, plan, CallStatus::Failed, EndReason::QueueTimeout, EndedBy::Engine, None, None);
                }
                admitted
            }
            Some(by) = hangup.recv() => {
                match by {
                    HangUp::Api => {
                        Self::fail(progress, plan, CallStatus::Canceled, EndReason::Canceled, EndedBy::Api, None, None);
                    }
                    HangUp::Shutdown => {
                        Self::fail(progress, plan, CallStatus::Failed, EndReason::EngineShutdown, EndedBy::Engine, None, None);
                    }
                }
                None
            }
        }
    }

    /// The media settings of a call negotiated as `session`.
    fn media_config(&self, plan: &CallPlan, session: &NegotiatedSession) -> MediaConfig {
        // The random bits of the v7 id seed SSRC, sequence and timestamp.
        let random = plan.id.as_u128();
        MediaConfig {
            remote: session.remote_rtp,
            remote_rtcp: session.remote_rtcp,
            rtcp_mux: session.rtcp_mux,
            codec: match session.codec.codec {
                AudioCodec::Pcma => MediaCodec::Pcma,
                AudioCodec::Opus => MediaCodec::Opus,
                _ => MediaCodec::Pcmu,
            },
            send_payload_type: session.codec.send_payload_type,
            receive_payload_type: session.codec.receive_payload_type,
            telephone_event: session.telephone_event,
            rtp_timeout: self.config.rtp_timeout,
            record: None,
            ssrc: random as u32,
            initial_sequence: (random >> 32) as u16,
            initial_timestamp: (random >> 16) as u32,
            cname: format!("dialtone-{}", plan.id),
        }
    }

    /// Runs one call and waits until all it did is recorded.
    async fn run(&self, plan: CallPlan, hangup: mpsc::UnboundedReceiver<HangUp>) {
        let progress = ProgressLog::start(self.storage.clone(), self.changes.clone(), plan.id);
        self.run_call(plan, hangup, &progress).await;
        progress.close().await;
    }

    async fn run_call(
        &self,
        plan: CallPlan,
        mut hangup: mpsc::UnboundedReceiver<HangUp>,
        progress: &ProgressLog,
    ) {
        // Both are held until the call ends.
        let Some((_org_slot, admission)) = self.wait_in_queue(&plan, &mut hangup, progress).await
        else {
            return;
        };
        let port = match self.ports.bind() {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(%error, "no RTP port");
                return Self::fail(
                    progress,
                    &plan,
                    CallStatus::Failed,
                    EndReason::MediaUnavailable,
                    EndedBy::Engine,
                    None,
                    None,
                );
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
        let mut call = match self.ua.dial_admitted(request, admission).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "dial refused");
                return Self::fail(
                    progress,
                    &plan,
                    CallStatus::Failed,
                    EndReason::DialRefused,
                    EndedBy::Engine,
                    None,
                    None,
                );
            }
        };
        let negotiate = |sdp: &[u8]| {
            let answer = SessionDescription::parse(std::str::from_utf8(sdp).ok()?).ok()?;
            negotiate_answer(&offer, &answer).ok()
        };
        let mut port = Some(port);
        let mut media: Option<MediaCall> = None;
        let mut early: Option<EarlyListener> = None;
        let mut early_heard = EarlyHeard::default();
        let mut brain: Option<tokio::task::JoinHandle<()>> = None;
        let mut answered = false;
        let mut hangup_by_api = false;
        let (brain_tx, mut brain_rx) = mpsc::unbounded_channel();
        let (brain_inputs, brain_inputs_rx) = mpsc::unbounded_channel::<BrainInput>();
        let mut brain_inputs_rx = Some(brain_inputs_rx);
        let max_duration = tokio::time::sleep(Duration::from_secs(86_400));
        tokio::pin!(max_duration);
        // Why and by whom (`agent` or `engine`) we hung up, when it was not the API.
        let mut local_end: Option<(EndReason, EndedBy)> = None;
        loop {
            let event = tokio::select! {
                e = call.next_event() => e,
                Some(by) = hangup.recv() => {
                    match by {
                        HangUp::Api => hangup_by_api = true,
                        HangUp::Shutdown => local_end = Some((EndReason::EngineShutdown, EndedBy::Engine)),
                    }
                    let _ = call.hang_up();
                    continue;
                }
                Some(request) = brain_rx.recv() => {
                    match request {
                        BrainRequest::HangUp { reason } => {
                            tracing::info!(reason = reason.as_str(), "the brain hangs up");
                            local_end = Some((reason, EndedBy::Agent));
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
                        // Early media may stop while the phone rings; the ring timeout
                        // covers that. The RTP timeout counts from the answer.
                        MediaEvent::RtpTimeout { .. } if !answered => {}
                        MediaEvent::RtpTimeout { silent_for } => {
                            tracing::warn!(?silent_for, "no RTP from the far end; hanging up");
                            local_end = Some((EndReason::RtpTimeout, EndedBy::Engine));
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
                _ = &mut max_duration => {
                    local_end = Some((EndReason::MaxDuration, EndedBy::Engine));
                    let _ = call.hang_up();
                    max_duration.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(86_400));
                    continue;
                }
            };
            let Some(event) = event else { break };
            match event {
                UaEvent::Attempt { sip_call_id, .. } => {
                    metrics::histogram!("dialtone_dispatch_to_invite_seconds", "trunk" => plan.trunk_name.clone())
                        .record(plan.dispatched.elapsed().as_secs_f64());
                    tracing::Span::current().record("sip_call_id", sip_call_id.as_str());
                    progress.record(
                        CallStatus::Dialing,
                        CallProgress {
                            sip_call_id: Some(sip_call_id),
                            ..CallProgress::default()
                        },
                    );
                }
                UaEvent::Call(CallEvent::Ringing { .. }) => {
                    progress.record(CallStatus::Ringing, CallProgress::default());
                }
                UaEvent::Call(CallEvent::EarlyMedia { sdp, .. }) => {
                    progress.record(CallStatus::Ringing, CallProgress::default());
                    // Ringback and announcements flow through the pipeline from here on; the
                    // conversation (and the brain) starts at answer.
                    let session = negotiate(&sdp).filter(|_| media.is_none());
                    if let Some((session, bound)) = session.and_then(|s| Some((s, port.take()?))) {
                        match self.media.start(bound, self.media_config(&plan, &session)) {
                            Ok(mut m) => {
                                tracing::info!(codec = %session.codec.name, "early media");
                                early = m.take_inbound().map(EarlyListener::start);
                                media = Some(m);
                                current = Some(session);
                            }
                            Err(error) => {
                                tracing::error!(%error, "early media did not start; hanging up");
                                local_end = Some((EndReason::MediaUnavailable, EndedBy::Engine));
                                let _ = call.hang_up();
                            }
                        }
                    }
                }
                UaEvent::Call(CallEvent::Answered { sdp }) => {
                    // A 2xx without SDP confirms the early media's answer (RFC 3261 §13.2.1).
                    let answer = match sdp.as_deref() {
                        Some(sdp) => negotiate(sdp),
                        None => current.clone(),
                    };
                    let Some(session) = answer else {
                        tracing::warn!("answer SDP unusable; hanging up");
                        local_end = Some((EndReason::IncompatibleMedia, EndedBy::Engine));
                        let _ = call.hang_up();
                        continue;
                    };
                    let started = match (media.take(), &current) {
                        (Some(m), Some(early_session))
                            if early_session.codec.codec == session.codec.codec =>
                        {
                            if early_session.remote_rtp != session.remote_rtp
                                || early_session.direction != session.direction
                            {
                                m.redirect(Direction {
                                    sending: session.direction.sends(),
                                    receiving: session.direction.receives(),
                                    remote: session.remote_rtp,
                                });
                            }
                            m.answered();
                            Ok(m)
                        }
                        (Some(_), _) => {
                            tracing::warn!("the answer changed the early media's codec");
                            Err((EndReason::IncompatibleMedia, None))
                        }
                        (None, _) => match port.take() {
                            Some(bound) => self
                                .media
                                .start(bound, self.media_config(&plan, &session))
                                .map_err(|error| (EndReason::MediaUnavailable, Some(error))),
                            None => Err((EndReason::MediaUnavailable, None)),
                        },
                    };
                    let mut m = match started {
                        Ok(m) => m,
                        Err((code, error)) => {
                            tracing::error!(
                                ?error,
                                code = code.as_str(),
                                "media did not start; hanging up"
                            );
                            local_end = Some((code, EndedBy::Engine));
                            let _ = call.hang_up();
                            continue;
                        }
                    };
                    if let Some(listener) = early.take() {
                        let (inbound, heard) = listener.stop().await;
                        early_heard = heard;
                        if let Some(inbound) = inbound {
                            m.restore_inbound(inbound);
                        }
                    }
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
                    let speech = &self.speech.handle;
                    brain = match Builtin::named(&plan.brain) {
                        Some(builtin) => brains::start(speech, builtin, &mut m, context),
                        None => brains::start_remote(
                            speech,
                            &plan.brain,
                            &mut m,
                            context,
                            plan.session.clone(),
                        ),
                    };
                    media = Some(m);
                    answered = true;
                    tracing::info!(codec = %session.codec.name, "answered");
                    metrics::histogram!("dialtone_setup_seconds", "trunk" => plan.trunk_name.clone())
                        .record(plan.dispatched.elapsed().as_secs_f64());
                    current = Some(session);
                    max_duration
                        .as_mut()
                        .reset(tokio::time::Instant::now() + plan.max_duration);
                    progress.record(CallStatus::InProgress, CallProgress::default());
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
                        _ if hangup_by_api => (CallStatus::Canceled, EndedBy::Api),
                        _ if local_end.is_some() => (CallStatus::Failed, EndedBy::Engine),
                        SipEndReason::Busy => (CallStatus::Busy, EndedBy::Callee),
                        SipEndReason::NoAnswer => (CallStatus::NoAnswer, EndedBy::Engine),
                        SipEndReason::Rejected | SipEndReason::Unavailable => {
                            (CallStatus::Failed, EndedBy::Callee)
                        }
                        _ => (CallStatus::Failed, EndedBy::Trunk),
                    };
                    let code = match local_end {
                        _ if hangup_by_api => EndReason::Canceled,
                        Some((code, _)) => code,
                        None => end_reason_of(reason),
                    };
                    // Early media heard before the call failed (an announcement, say).
                    let media_json = match media.take() {
                        Some(m) => media_record(m.stop().await, early.take(), early_heard).await,
                        None => None,
                    };
                    Self::fail(progress, &plan, state, code, by, status, media_json);
                }
                UaEvent::Call(CallEvent::Ended { by, reason }) => {
                    let (code, ended_by) = match (by, hangup_by_api, local_end) {
                        (Party::Remote, ..) => (end_reason_of(reason), EndedBy::Callee),
                        (Party::Local, true, _) => (end_reason_of(reason), EndedBy::Api),
                        (Party::Local, false, Some((code, by))) => (code, by),
                        (Party::Local, false, None) => (end_reason_of(reason), EndedBy::Agent),
                    };
                    if let Some(mut b) = brain.take() {
                        // The brain hears how the call ended, and has a moment to finish.
                        let _ = brain_inputs.send(BrainInput::Ended {
                            by: ended_by,
                            reason: code,
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
                    metrics::counter!("dialtone_calls_total", "status" => "completed", "end_reason" => code.as_str(), "trunk" => plan.trunk_name.clone())
                        .increment(1);
                    let media_json = match stats {
                        Some(s) => {
                            metrics::histogram!("dialtone_jitter_buffer_ms")
                                .record(f64::from(s.jitter_buffer_ms));
                            metrics::counter!("dialtone_concealed_frames_total")
                                .increment(s.concealed_frames);
                            metrics::counter!("dialtone_inbound_ring_overflows_total")
                                .increment(s.inbound_overflow);
                            metrics::counter!("dialtone_outbound_ring_underflows_total")
                                .increment(s.outbound_underflow);
                            media_record(s, early.take(), early_heard).await
                        }
                        None => None,
                    };
                    progress.record(
                        CallStatus::Completed,
                        CallProgress {
                            end_reason: Some(code),
                            ended_by: Some(ended_by),
                            media: media_json,
                            ..CallProgress::default()
                        },
                    );
                    tracing::info!(
                        ended_by = ended_by.as_str(),
                        code = code.as_str(),
                        "call ended"
                    );
                }
                _ => {}
            }
        }
    }
}

/// One call's progress, written to the store in the order it happened by a task of its own,
/// so that the call's signalling and media never wait on a commit: a call answered while
/// its `dialing` row is still being written starts its media at once. Status only moves
/// forward, so the writes keep their order; [`ProgressLog::close`] waits for the last one.
struct ProgressLog {
    writes: mpsc::UnboundedSender<(CallStatus, CallProgress)>,
    writer: tokio::task::JoinHandle<()>,
}

impl ProgressLog {
    fn start(storage: Storage, changes: tokio::sync::broadcast::Sender<Uuid>, id: Uuid) -> Self {
        let (writes, mut pending) = mpsc::unbounded_channel::<(CallStatus, CallProgress)>();
        let writer = tokio::spawn(
            async move {
                while let Some((status, progress)) = pending.recv().await {
                    match storage.advance_call(id, status, progress).await {
                        // Committed: now it may be announced.
                        Ok(_) => {
                            let _ = changes.send(id);
                        }
                        Err(error) => tracing::error!(
                            %error,
                            status = status.as_str(),
                            "could not record call progress"
                        ),
                    }
                }
            }
            .in_current_span(),
        );
        Self { writes, writer }
    }

    /// Queues `status` (with what came with it) behind the writes before it.
    fn record(&self, status: CallStatus, mut progress: CallProgress) {
        // Stamped now: the step's time is when it happened, not when its write gets its turn.
        progress.at = Some(dialtone_storage::now_ms());
        // The writer only stops once `close` drops the sender.
        let _ = self.writes.send((status, progress));
    }

    /// Waits until everything recorded is written.
    async fn close(self) {
        drop(self.writes);
        if let Err(error) = self.writer.await {
            tracing::error!(%error, "the call's progress writer failed");
        }
    }
}

/// Who asks a live call to hang up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HangUp {
    /// `POST /v1/calls/{id}/hangup` or `HangupCall`.
    Api,
    /// The daemon is shutting down and the drain time is over.
    Shutdown,
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
    /// The trunk's name, for metrics labels.
    trunk_name: String,
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

/// The speech loop's settings from the agent's: `amd` (thresholds left out keep the
/// detector's defaults), `barge_in`, `endpointing_silence_ms` and `silence_timeout_seconds`
/// (the guard: a prompt, then a hang-up with `silence_timeout`).
fn speech_setting(settings: &AgentFields) -> SpeechConfig {
    let d = SpeechConfig::default();
    let ms = |v: Option<u32>, default: Duration| {
        v.map_or(default, |ms| Duration::from_millis(ms.into()))
    };
    SpeechConfig {
        amd: match settings.amd {
            None | Some(Amd::Off) => None,
            Some(Amd::On(t)) => {
                let a = AmdConfig::default();
                Some(AmdConfig {
                    initial_silence: ms(t.initial_silence_ms, a.initial_silence),
                    greeting: ms(t.greeting_ms, a.greeting),
                    after_greeting_silence: ms(
                        t.after_greeting_silence_ms,
                        a.after_greeting_silence,
                    ),
                    total_analysis_time: ms(t.total_analysis_time_ms, a.total_analysis_time),
                    maximum_words: t.maximum_words.unwrap_or(a.maximum_words),
                    ..a
                })
            }
        },
        barge_in: match settings.barge_in {
            Some(ModelBargeIn::Off) => BargeIn::Off,
            Some(ModelBargeIn::AfterMs(after)) => {
                BargeIn::After(Duration::from_millis(after.into()))
            }
            Some(ModelBargeIn::On) | None => d.barge_in,
        },
        endpointing_silence: ms(settings.endpointing_silence_ms, d.endpointing_silence),
        silence_timeout: settings
            .silence_timeout_seconds
            .map(|s| Duration::from_secs(s.into())),
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

/// The call record's end reason for one the SIP stack gave: the same code, since the model's
/// reasons are a superset of the SIP stack's (a test walks them); a reason the model did not
/// know would be recorded as `request_failed`.
fn end_reason_of(sip: SipEndReason) -> EndReason {
    sip.as_str().parse().unwrap_or(EndReason::RequestFailed)
}

/// What the far end played before it answered (ringback, announcements), in 20 ms frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EarlyHeard {
    frames: u64,
    /// Frames above -40 dBFS: tones or speech rather than silence.
    voiced: u64,
}

/// Listens to early media until stopped. Its frames are measured, not given to the brain, whose
/// conversation starts at answer with no stale ringback in its ring.
#[derive(Debug)]
struct EarlyListener {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(FrameReceiver, EarlyHeard)>,
}

impl EarlyListener {
    fn start(mut inbound: FrameReceiver) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut heard = EarlyHeard::default();
            loop {
                let frame = tokio::select! {
                    f = inbound.recv() => f,
                    _ = &mut stopped => None,
                };
                let Some(frame) = frame else { break };
                heard.frames += 1;
                if dialtone_media::level_dbfs(&frame.samples) > -40.0 {
                    heard.voiced += 1;
                }
            }
            // What came in since is early media too, not the caller's first words.
            while let Some(frame) = inbound.try_recv() {
                heard.frames += 1;
                if dialtone_media::level_dbfs(&frame.samples) > -40.0 {
                    heard.voiced += 1;
                }
            }
            (inbound, heard)
        });
        Self { stop, task }
    }

    /// Stops listening; gives back the ring (for the brain) and what was heard.
    async fn stop(self) -> (Option<FrameReceiver>, EarlyHeard) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok((inbound, heard)) => (Some(inbound), heard),
            Err(_) => (None, EarlyHeard::default()),
        }
    }
}

/// The call record's `media_stats`: the media's counters plus the early media heard (from a
/// listener still running when the call failed before answer, or as counted at answer).
async fn media_record(
    stats: dialtone_media::MediaStats,
    listener: Option<EarlyListener>,
    heard: EarlyHeard,
) -> Option<Value> {
    let heard = match listener {
        Some(l) => l.stop().await.1,
        None => heard,
    };
    let mut record = serde_json::to_value(stats).ok()?;
    if let Some(o) = record.as_object_mut() {
        o.insert("early_media_ms".into(), (heard.frames * 20).into());
        o.insert("early_media_voiced_ms".into(), (heard.voiced * 20).into());
    }
    Some(record)
}

/// The next event of the call's media; pending while there is none.
async fn next_media_event(media: &mut Option<MediaCall>) -> Option<MediaEvent> {
    match media {
        Some(m) => m.next_event().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every end reason the SIP stack gives (from every final status, and those no status
    /// gives) keeps its code on the call record.
    #[test]
    fn the_sip_stacks_end_reasons_keep_their_codes() {
        let from_statuses = (300..700).map(SipEndReason::from_status);
        let others = [
            SipEndReason::Completed,
            SipEndReason::TrunkTimeout,
            SipEndReason::TransportError,
            SipEndReason::SessionExpired,
        ];
        for sip in from_statuses.chain(others) {
            assert_eq!(end_reason_of(sip).as_str(), sip.as_str());
        }
    }
}
