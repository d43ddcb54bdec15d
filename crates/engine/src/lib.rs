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
//! The decisions of steps 1–5 (which status, which end reason, who ended it, what is written
//! and in which order, the queue timeout and the maximum duration) live in a sans-IO call
//! machine, tested on a virtual clock; a thin task per call performs its I/O (module `call`).
//!
//! A call in progress can be transferred ([`Engine::transfer`], or its brain asks): a blind
//! transfer sends REFER (RFC 3515) and follows the far end's NOTIFYs; a `2xx` sipfrag ends our
//! leg as `transferred`, anything else leaves the call with its brain, which is told. Where a
//! transfer may go (numbers, SIP URIs on the trunk's host or its `transfer_sip_domains`) and
//! the attempt's state are the call machine's too.
//!
//! Calls of agents that `record` are recorded by their media (module `recording`): the
//! finished file goes to the [`Recordings`] store and its description onto the final step.
//!
//! Brains: `builtin:echo` (the caller hears itself, full duplex through the media pipeline),
//! `builtin:ivr` (speaks the instructions, collects digits) and any AgentBridge server
//! (`grpc://host:port`); `dialtone_agent` holds the speech synthesis. Brains and their speech loops
//! run on [`SpeechWorkers`], a runtime of their own, so that the API, signalling and storage
//! stay prompt on a node busy with conversations.

mod agent_setup;
mod brains;
mod call;
mod caps;
mod commands;
mod inbound;
pub mod leftovers;
pub mod outbound;
mod port_share;
mod recording;
pub mod webhooks;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use brains::{
    BARGE_IN_STOP_METRIC, BRAIN_CONNECT_LIMIT, MEDIA_STREAMS_INBOUND_METRIC,
    MEDIA_STREAMS_OUTBOUND_METRIC,
};
use dialtone_media::{MediaEngine, PortPool, Scheduling};
use dialtone_model::{
    AgentFields, Amd, AmdMode, BargeIn as ModelBargeIn, TransferCall, VoicemailAction, placeholder,
};
pub use dialtone_sip_ua::RegistrationState;
use dialtone_sip_ua::{Credentials, SipUa, Transport, Trunk, TrunkTls};
use dialtone_speech::{AmdConfig, BargeIn, SpeechConfig};
pub use recording::{ABANDONED_AFTER, Recordings, purge_expired, sweep_abandoned};

use brains::Builtin;
use call::{Control, HangUp, TransferPolicy, TransferRefusal};
use commands::NodeCommand;
use dialtone_agent::TextToSpeech;
use dialtone_storage::{Inserted, NewCall, Storage, StorageError, TrunkTransport};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

/// How long a transfer request waits for the call's task to take it up.
const TRANSFER_ANSWER_WAIT: Duration = Duration::from_secs(5);

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
    #[error(
        "brain {brain:?} is not available (builtin:echo, builtin:ivr, builtin:agent, \
         grpc://host:port or a ws:// or wss:// URL)"
    )]
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
    /// A posted result does not match the agent's `returns`.
    #[error("{0}")]
    InvalidResult(String),
    /// The call has already ended.
    #[error("call {call_id} has already ended")]
    CallEnded {
        /// The call.
        call_id: Uuid,
    },
    /// The engine is shutting down.
    #[error("the daemon is shutting down and takes no new calls; dispatch to another node")]
    ShuttingDown,
    /// The node could not renew its lease in the shared database: another node may be
    /// closing its calls, so it takes none.
    #[error(
        "this node lost its lease in the database and takes no new calls; dispatch to another node"
    )]
    LeaseLost,
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
    /// A `{{context.KEY}}` placeholder of the instructions or the first message names a key
    /// the call's context lacks.
    #[error(
        "`context` has no key \"{key}\", which the instructions or the agent's first_message \
         use as {{{{context.{key}}}}}"
    )]
    MissingContextKey {
        /// The key.
        key: String,
    },
    /// The agent's `builtin:agent` settings name a provider that cannot be used.
    #[error("the agent's `{field}` cannot be used: {detail}")]
    AgentProvider {
        /// The agent field (`llm.provider`, `stt.provider`, `tts.provider`).
        field: String,
        /// Why.
        detail: String,
    },
    /// The organisation is disabled: it places no new calls.
    #[error(
        "organization {org_id} is disabled and places no new calls (an operator can enable it \
         again); calls already live go on"
    )]
    OrganizationDisabled {
        /// The organisation.
        org_id: Uuid,
    },
    /// The call is not `in_progress`: only an answered call can be transferred.
    #[error("call {call_id} is not in progress: only an answered call can be transferred")]
    CallNotInProgress {
        /// The call.
        call_id: Uuid,
    },
    /// A transfer of the call is already under way.
    #[error("a transfer of call {call_id} is already under way")]
    TransferUnderWay {
        /// The call.
        call_id: Uuid,
    },
    /// The transfer's destination or mode breaks a rule (the error names the field).
    #[error(transparent)]
    InvalidTransfer(dialtone_model::FieldError),
    /// The node that owns the call did not take the command up in time.
    #[error("node {node}, which carries the call, did not answer; retry, or ask that node")]
    OwnerUnreachable {
        /// The owner.
        node: String,
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
    /// Which loopback, private and link-local addresses tenants may point the daemon at
    /// (brains named by agents; webhooks have the same setting of their own).
    pub private_destinations: outbound::PrivateDestinations,
    /// The concurrency cap of organisations that set none of their own.
    pub default_org_max_concurrent_calls: Option<u32>,
    /// The secret tool calls are signed with (`Dialtone-Signature`, as webhooks are).
    pub signing_secret: String,
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
    /// The ports' fair use between organisations.
    port_shares: Arc<port_share::PortShares>,
    media: Arc<MediaEngine>,
    config: EngineConfig,
    live: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Control>>>,
    accepting: std::sync::atomic::AtomicBool,
    /// Whether the node holds its lease in the shared database (see the daemon's `node`).
    lease_held: std::sync::atomic::AtomicBool,
    changes: tokio::sync::broadcast::Sender<Uuid>,
    /// Per organisation: its concurrency cap and the slots under it (FIFO).
    org_slots: Mutex<HashMap<Uuid, (u32, Arc<tokio::sync::Semaphore>)>>,
    /// Per organisation: tokens left and when they were counted (rate cap).
    org_rates: Mutex<HashMap<Uuid, dialtone_sip_ua::TokenBucket>>,
    /// Registrations kept with trunks that ask for one.
    registrations: Mutex<HashMap<Uuid, dialtone_sip_ua::Registration>>,
    /// Text to speech for the built-in brains.
    tts: Arc<dyn TextToSpeech>,
    /// The HTTP client of `builtin:agent`'s provider requests (made on first use).
    provider_http: std::sync::OnceLock<reqwest::Client>,
    /// Where the brains run.
    speech: SpeechWorkers,
    /// Where calls of agents that record are recorded (none: nothing is recorded).
    recordings: Option<Recordings>,
}

/// The SIP user agent's trunk for a stored one.
pub(crate) fn trunk_for_ua(t: &dialtone_storage::Trunk) -> Trunk {
    let transport = match t.transport {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
        TrunkTransport::Tls => Transport::Tls,
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
    trunk.tls = tls_for_ua(&t.security);
    trunk
}

/// The SIP user agent's TLS settings for a trunk's.
fn tls_for_ua(security: &dialtone_storage::TrunkSecurity) -> TrunkTls {
    TrunkTls {
        ca_pem: security.tls_ca_pem.clone(),
        verify: security.tls_verify,
        client_cert_pem: security.tls_client_cert_pem.clone(),
        client_key_pem: security.tls_client_key_pem.clone(),
    }
}

/// Whether a TLS trunk's settings make a TLS client (the CA's certificates are usable, the
/// client key is the client certificate's): what every call would otherwise fail on.
pub fn check_trunk_tls(
    security: &dialtone_storage::TrunkSecurity,
) -> Result<(), dialtone_sip_ua::TlsSettingError> {
    dialtone_sip_ua::check_tls_settings(&tls_for_ua(security))
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
        recordings: Option<Recordings>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ports: PortPool::new(config.rtp_bind, config.rtp_first_port, config.rtp_last_port),
            // Each call takes an even port and the odd one above it.
            port_shares: port_share::PortShares::new(
                usize::from(config.rtp_last_port.saturating_sub(config.rtp_first_port)) / 2 + 1,
            ),
            media,
            storage,
            ua,
            config,
            live: Mutex::new(HashMap::new()),
            accepting: std::sync::atomic::AtomicBool::new(true),
            lease_held: std::sync::atomic::AtomicBool::new(true),
            changes: tokio::sync::broadcast::channel(1024).0,
            org_slots: Mutex::new(HashMap::new()),
            org_rates: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
            tts: Arc::new(dialtone_agent::EspeakNg::default()),
            provider_http: std::sync::OnceLock::new(),
            speech,
            recordings,
        })
    }

    /// Where calls are recorded, when recording is set up.
    pub fn recordings(&self) -> Option<&Recordings> {
        self.recordings.as_ref()
    }

    /// The storage the engine writes to.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The brain of agents that name none.
    pub fn default_brain(&self) -> &str {
        &self.config.default_brain
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
            .filter(|s| s.send(Control::HangUp(HangUp::Shutdown)).is_ok())
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

    /// Whether the node holds its lease (dispatches are refused while it does not).
    pub fn holds_lease(&self) -> bool {
        self.lease_held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records whether the node holds its lease.
    pub fn set_lease_held(&self, held: bool) {
        self.lease_held
            .store(held, std::sync::atomic::Ordering::SeqCst);
        self.publish_availability();
    }

    /// Stops accepting new dispatches.
    pub fn stop_accepting(&self) {
        self.accepting
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.publish_availability();
    }

    /// Tells the SIP user agent whether this node takes new calls (accepting, with its lease),
    /// so that OPTIONS probes from an edge proxy see a draining or fenced node as unavailable.
    fn publish_availability(&self) {
        let available = self.is_accepting() && self.holds_lease();
        if self.ua.set_available(available).is_err() {
            tracing::warn!(available, "the SIP user agent has stopped");
        }
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
        if !self.holds_lease() {
            return Err(EngineError::LeaseLost);
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
        if org.disabled_at.is_some() {
            return Err(EngineError::OrganizationDisabled { org_id: org.id });
        }
        let settings = &agent.config;
        let brain = self
            .brain_for(settings)
            .map_err(|brain| EngineError::BrainUnavailable { brain })?;
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
        let context = request.context.clone();
        for text in [instructions.as_deref(), settings.first_message.as_deref()]
            .into_iter()
            .flatten()
        {
            if let Some(key) = placeholder::missing_key(text, &context) {
                return Err(EngineError::MissingContextKey { key });
            }
        }
        let instructions = instructions.map(|i| placeholder::fill(&i, &context));
        let agent_setup = self
            .agent_setup(org.id, &brain, settings, instructions.as_deref(), &context)
            .await?;
        let amd_listener = self.amd_listener(org.id, &brain, settings).await?;
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
            self.take_org_rate(org.id, per_second).await?;
        }
        let inserted = self
            .storage
            .insert_call_once(
                NewCall {
                    org_id: org.id,
                    direction: dialtone_storage::Direction::Outbound,
                    agent_id: agent.id,
                    to: request.to.clone(),
                    from_number: from.e164.clone(),
                    trunk_id: trunk.id,
                    instructions,
                    context,
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
        let mut agent_setup = agent_setup;
        if let Some(setup) = agent_setup.as_mut() {
            agent_setup::synthesise_first_message(
                setup,
                settings.voice.as_deref(),
                settings.language.as_deref(),
            );
        }
        let plan = self.plan(
            &call,
            &org,
            &agent,
            &trunk,
            (brain, agent_setup, amd_listener),
            dispatched,
        );
        self.spawn_call(call.id, move |engine, controls| async move {
            engine.run(plan, controls).await;
        });
        Ok(Dispatched::New(call))
    }

    /// The resolved plan of `call`, run by `agent` through `trunk` with `brain` (and
    /// `builtin:agent`'s setup and the AMD listener it needs).
    fn plan(
        &self,
        call: &dialtone_storage::Call,
        org: &dialtone_storage::Organization,
        agent: &dialtone_storage::Agent,
        trunk: &dialtone_storage::Trunk,
        (brain, agent_setup, amd_listener): (
            String,
            Option<brains::agent::AgentSetup>,
            Option<Arc<dyn dialtone_agent::SpeechToText>>,
        ),
        dispatched: std::time::Instant,
    ) -> CallPlan {
        let settings = &agent.config;
        let org_cap = org
            .max_concurrent_calls
            .or(self.config.default_org_max_concurrent_calls);
        CallPlan {
            id: call.id,
            org_id: org.id,
            org_slots: org_cap.map(|cap| self.org_slots(org.id, cap)),
            caps: caps::Caps {
                org: org_cap.map(|cap| (org.id, cap)),
                trunk: trunk.max_concurrent_calls.map(|cap| (trunk.id, cap)),
            },
            dispatched,
            to: call.to.clone(),
            from: call.from_number.clone(),
            trunk: Arc::new(trunk_for_ua(trunk)),
            trunk_id: trunk.id,
            ring_timeout: settings.ring_timeout(),
            max_duration: settings.max_duration(),
            speech: speech_setting(settings, &brain),
            voicemail: match settings.voicemail() {
                VoicemailAction::HangUp => brains::Voicemail::HangUp,
                VoicemailAction::LeaveMessage(message) => brains::Voicemail::LeaveMessage(message),
                VoicemailAction::Continue => brains::Voicemail::Continue,
            },
            brain_is_agents: settings.brain.is_some(),
            brain,
            instructions: call.instructions.clone(),
            voice: settings.voice.clone(),
            language: settings.language.clone(),
            returns: settings.returns.clone().filter(Value::is_object),
            mask_dtmf: settings.mask_dtmf == Some(true),
            record: self
                .recordings
                .as_ref()
                .and_then(|r| r.record_to(call.id, settings)),
            session: brains::Session {
                agent_id: agent.id,
                to: call.to.clone(),
                from: call.from_number.clone(),
                direction: call.direction,
                persona: settings.persona.clone().unwrap_or_default(),
                context: call.context.clone(),
                metadata: call.metadata.clone(),
                tools: settings
                    .tools
                    .as_ref()
                    .and_then(|tools| serde_json::to_value(tools).ok())
                    .unwrap_or(Value::Null),
                brain_headers: settings.brain_headers.clone().unwrap_or_default(),
            },
            agent: agent_setup,
            amd_listener,
            srtp: trunk.security.srtp,
            codecs: trunk.offered_codecs().to_vec(),
            transfer_policy: TransferPolicy {
                trunk_host: trunk.host.clone(),
                sip_domains: trunk.security.transfer_sip_domains.clone(),
                destinations: settings.transfer_destinations.clone().unwrap_or_default(),
            },
        }
    }

    /// Counts call `id` live and runs `work` with its controls (hang-up, transfer), in the
    /// call's span, until it is done.
    fn spawn_call<W, F>(self: &Arc<Self>, id: Uuid, work: W)
    where
        W: FnOnce(Arc<Engine>, mpsc::UnboundedReceiver<Control>) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (hangup_tx, hangup_rx) = mpsc::unbounded_channel();
        let live = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            live.insert(id, hangup_tx);
            live.len()
        };
        metrics::gauge!("dialtone_active_calls").set(live as f64);
        let engine = self.clone();
        let span = tracing::info_span!("call", call_id = %id, sip_call_id = tracing::field::Empty);
        tokio::spawn(
            async move {
                work(engine.clone(), hangup_rx).await;
                let live = {
                    let mut live = engine.live.lock().unwrap_or_else(|e| e.into_inner());
                    live.remove(&id);
                    live.len()
                };
                metrics::gauge!("dialtone_active_calls").set(live as f64);
            }
            .instrument(span),
        );
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

    /// Asks a live call to hang up (CANCEL before answer, BYE after), on this node or, through
    /// the database, on the node that owns it.
    pub async fn hangup(&self, call_id: Uuid) -> Result<(), EngineError> {
        match self.hangup_here(call_id) {
            true => Ok(()),
            false => self.on_owner(call_id, NodeCommand::HangUp).await,
        }
    }

    /// Records the structured result a call's brain posts (any brain: a Media Streams app has
    /// no other way to), checked against its agent's `returns`; it replaces any result or
    /// error already on the record.
    pub async fn post_result(&self, call_id: Uuid, result: &Value) -> Result<(), EngineError> {
        let call = self.storage.get_call(call_id).await?;
        let returns = self
            .storage
            .get_agent(call.agent_id)
            .await?
            .config
            .returns
            .filter(Value::is_object);
        brains::check_result(returns.as_ref(), result).map_err(EngineError::InvalidResult)?;
        self.storage.set_result(call_id, Some(result), None).await?;
        Ok(())
    }

    /// Asks a call live on this node to hang up; `false` when it is not live here.
    fn hangup_here(&self, call_id: Uuid) -> bool {
        self.control(call_id, Control::HangUp(HangUp::Api))
    }

    /// Transfers a call in progress (`refer`: a REFER to the far end, RFC 3515), on this node
    /// or, through the database, on the node that owns it. Returns once the transfer started;
    /// its outcome goes on the record (`transfer`, and `transferred_to` with end reason
    /// `transferred` when it completed).
    pub async fn transfer(&self, call_id: Uuid, request: TransferCall) -> Result<(), EngineError> {
        match self.transfer_here(call_id, request.clone()).await {
            Some(started) => started,
            None => self.on_owner(call_id, NodeCommand::Transfer(request)).await,
        }
    }

    /// Transfers a call live on this node; `None` when it is not live here.
    async fn transfer_here(
        &self,
        call_id: Uuid,
        request: TransferCall,
    ) -> Option<Result<(), EngineError>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let control = Control::Transfer {
            to: request.to,
            mode: request.mode,
            reply,
        };
        if !self.control(call_id, control) {
            return None;
        }
        // A call busy ending (its brain's last writes) reads no more controls: its answer is
        // as good as "ended".
        let answer = tokio::time::timeout(TRANSFER_ANSWER_WAIT, answer)
            .await
            .unwrap_or(Ok(Err(TransferRefusal::NotInProgress)));
        Some(match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(TransferRefusal::NotInProgress)) => {
                Err(EngineError::CallNotInProgress { call_id })
            }
            Ok(Err(TransferRefusal::UnderWay)) => Err(EngineError::TransferUnderWay { call_id }),
            Ok(Err(TransferRefusal::Invalid(error))) => Err(EngineError::InvalidTransfer(error)),
            // The call ended before it could answer.
            Err(_) => Err(EngineError::CallEnded { call_id }),
        })
    }

    /// The brain an agent's calls run (its own, else the daemon's default), or its name when
    /// this engine cannot run it.
    fn brain_for(&self, settings: &dialtone_model::AgentFields) -> Result<String, String> {
        let brain = settings
            .brain
            .clone()
            .unwrap_or_else(|| self.config.default_brain.clone());
        if Builtin::named(&brain).is_none()
            && brain != dialtone_model::BUILTIN_AGENT
            && !brain.starts_with("grpc://")
            && !dialtone_model::media_streams::is_media_streams(&brain)
        {
            return Err(brain);
        }
        Ok(brain)
    }

    /// Hands `control` to the live call's task; `false` when it is not live.
    fn control(&self, call_id: Uuid, control: Control) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&call_id)
            .is_some_and(|s| s.send(control).is_ok())
    }

    /// Ids of calls as their changes are committed, for watchers (a receiver that lags
    /// misses ids and should re-read what it watches).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }
}

/// The resolved plan of one call.
#[derive(Debug, Clone)]
struct CallPlan {
    id: Uuid,
    /// The organisation it belongs to.
    org_id: Uuid,
    /// The organisation's concurrency slots on this node, when it has a cap.
    org_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// The caps the call counts against on every node.
    caps: caps::Caps,
    dispatched: std::time::Instant,
    to: String,
    from: String,
    trunk: Arc<Trunk>,
    /// The trunk's id (what metrics label it with: its name is the tenant's and would show
    /// one organisation's names to whoever reads the metrics).
    trunk_id: Uuid,
    ring_timeout: Duration,
    max_duration: Duration,
    /// The speech loop's settings from the agent (AMD, barge-in, endpointing, silence guard).
    speech: SpeechConfig,
    /// What to do when a machine answers.
    voicemail: brains::Voicemail,
    /// The brain that runs the call.
    brain: String,
    /// Whether the agent named it (a tenant's address, vetted when connecting) rather than
    /// the daemon's default.
    brain_is_agents: bool,
    /// The effective instructions.
    instructions: Option<String>,
    /// The agent's voice and language.
    voice: Option<String>,
    language: Option<String>,
    /// The agent's `returns` schema.
    returns: Option<Value>,
    /// Mask digits in transcripts and logs.
    mask_dtmf: bool,
    /// What the call records, when its agent records.
    record: Option<recording::CallRecording>,
    /// What an external brain is told at the start.
    session: brains::Session,
    /// `builtin:agent`'s conversation, models and tools.
    agent: Option<brains::agent::AgentSetup>,
    /// What answering-machine detection listens for voicemail words with (other brains).
    amd_listener: Option<Arc<dyn dialtone_agent::SpeechToText>>,
    /// The trunk's SRTP: what the offer carries and what an answer must bring.
    srtp: dialtone_model::SrtpMode,
    /// The trunk's codecs, best first: what the offer lists.
    codecs: Vec<dialtone_model::Codec>,
    /// Where the call may be transferred.
    transfer_policy: TransferPolicy,
}

/// How long a caller must speak over `builtin:agent` before it stops, when the agent leaves
/// `barge_in` out: a shorter "uh-huh" or "yeah" is a backchannel, kept in the transcript but
/// cutting nothing (LiveKit Agents' `min_interruption_duration` has the same default).
pub const AGENT_BARGE_IN_MIN_SPEECH: Duration = Duration::from_millis(500);

/// The speech loop's settings from the agent's: `amd` (thresholds left out keep the
/// detector's defaults), `barge_in`, `endpointing_silence_ms` and `silence_timeout_seconds`
/// (the guard: a prompt, then a hang-up with `silence_timeout`). Without `barge_in`,
/// `builtin:agent` is interrupted after [`AGENT_BARGE_IN_MIN_SPEECH`] of speech, a Media
/// Streams app's calls not at all (the app decides, and sends `clear`), the other brains at
/// the speech's onset.
fn speech_setting(settings: &AgentFields, brain: &str) -> SpeechConfig {
    let d = SpeechConfig::default();
    let ms = |v: Option<u32>, default: Duration| {
        v.map_or(default, |ms| Duration::from_millis(ms.into()))
    };
    SpeechConfig {
        amd: match settings.amd {
            None | Some(Amd::Off) => None,
            Some(Amd::On(t)) => {
                let a = AmdConfig::for_mode(t.mode.unwrap_or(AmdMode::Fast));
                let after_greeting = ms(t.after_greeting_silence_ms, a.after_greeting_silence);
                Some(AmdConfig {
                    initial_silence: ms(t.initial_silence_ms, a.initial_silence),
                    greeting: ms(t.greeting_ms, a.greeting),
                    after_greeting_silence: after_greeting,
                    // A longer greeting never waits less than a short one.
                    after_long_greeting_silence: a.after_long_greeting_silence.max(after_greeting),
                    total_analysis_time: ms(t.total_analysis_time_ms, a.total_analysis_time),
                    maximum_words: t.maximum_words.unwrap_or(a.maximum_words),
                    final_silence: ms(t.final_silence_ms, a.final_silence),
                    ..a
                })
            }
        },
        barge_in: match settings.barge_in {
            Some(ModelBargeIn::Off) => BargeIn::Off,
            Some(ModelBargeIn::AfterMs(after)) => {
                BargeIn::After(Duration::from_millis(after.into()))
            }
            Some(ModelBargeIn::On) => BargeIn::On,
            None if brain == dialtone_model::BUILTIN_AGENT => {
                BargeIn::After(AGENT_BARGE_IN_MIN_SPEECH)
            }
            None if dialtone_model::media_streams::is_media_streams(brain) => BargeIn::Off,
            None => d.barge_in,
        },
        endpointing_silence: ms(settings.endpointing_silence_ms, d.endpointing_silence),
        silence_timeout: settings
            .silence_timeout_seconds
            .map(|s| Duration::from_secs(s.into())),
        ..d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn barge_in(barge_in: Option<ModelBargeIn>, brain: &str) -> BargeIn {
        let settings = AgentFields {
            barge_in,
            ..AgentFields::default()
        };
        speech_setting(&settings, brain).barge_in
    }

    /// `builtin:agent` without `barge_in` lets a backchannel by: the caller must speak
    /// [`AGENT_BARGE_IN_MIN_SPEECH`] over it. What the agent sets stands; the other brains keep
    /// theirs (at the onset; a Media Streams app, never).
    #[test]
    fn builtin_agent_is_interrupted_after_a_minimum_of_speech_unless_told_otherwise() {
        let agent = dialtone_model::BUILTIN_AGENT;
        assert_eq!(AGENT_BARGE_IN_MIN_SPEECH, Duration::from_millis(500));
        assert_eq!(
            barge_in(None, agent),
            BargeIn::After(AGENT_BARGE_IN_MIN_SPEECH)
        );
        assert_eq!(barge_in(Some(ModelBargeIn::On), agent), BargeIn::On);
        assert_eq!(barge_in(Some(ModelBargeIn::Off), agent), BargeIn::Off);
        assert_eq!(
            barge_in(Some(ModelBargeIn::AfterMs(800)), agent),
            BargeIn::After(Duration::from_millis(800))
        );
        for other in ["builtin:echo", "builtin:ivr", "grpc://127.0.0.1:50051"] {
            assert_eq!(barge_in(None, other), BargeIn::On, "{other}");
            assert_eq!(barge_in(Some(ModelBargeIn::Off), other), BargeIn::Off);
        }
        assert_eq!(barge_in(None, "wss://app.example/stream"), BargeIn::Off);
        assert_eq!(
            barge_in(Some(ModelBargeIn::On), "wss://app.example/stream"),
            BargeIn::On
        );
    }
}
