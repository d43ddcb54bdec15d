//! `dialtone`: the command-line client of a Dialtone daemon, over its gRPC API.
//!
//! `dialtone trunks|numbers|agents|providers|calls …` create, list, get and delete (`providers
//! update` too); `dialtone call --agent
//! ID --to +1…` dispatches a call, follows it live (`WatchCall`) until it ends and prints the
//! record; `dialtone demo` runs a whole call on this machine. Tables by default, `--json` for
//! scripts; on failure the server's message goes to stderr and the exit status is 1.

mod demo;
mod render;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dialtone_control::proto;
use dialtone_proto::json::to_struct;
use proto::agent_service_client::AgentServiceClient;
use proto::call_service_client::CallServiceClient;
use proto::number_service_client::NumberServiceClient;
use proto::provider_service_client::ProviderServiceClient;
use proto::trunk_service_client::TrunkServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

/// Command-line client of a Dialtone daemon (gRPC).
#[derive(Debug, Parser)]
#[command(name = "dialtone", version)]
struct Cli {
    /// The daemon's gRPC endpoint.
    #[arg(
        long,
        env = "DIALTONE_SERVER",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    server: String,
    /// API key (sent as a bearer token).
    #[arg(long, env = "DIALTONE_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// SIP trunks.
    #[command(subcommand)]
    Trunks(TrunkCommand),
    /// Phone numbers (caller IDs) on trunks.
    #[command(subcommand)]
    Numbers(NumberCommand),
    /// Agents.
    #[command(subcommand)]
    Agents(AgentCommand),
    /// Language and speech providers that agents name.
    #[command(subcommand)]
    Providers(ProviderCommand),
    /// Calls.
    #[command(subcommand)]
    Calls(CallCommand),
    /// Dispatches a call, follows it live until it ends, and prints its record.
    Call(DispatchArgs),
    /// Runs a whole call on this machine: a daemon on SQLite, SIPp as the callee, an
    /// appointment-confirmation agent on `builtin:ivr`.
    Demo,
}

#[derive(Debug, Subcommand)]
enum TrunkCommand {
    /// Lists trunks.
    List,
    /// Shows one trunk.
    Get { id: String },
    /// Creates a trunk.
    Create(Box<TrunkArgs>),
    /// Deletes a trunk (refused while numbers use it).
    Delete { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SrtpArg {
    Off,
    Optional,
    Required,
}

/// Which calls an agent takes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DirectionArg {
    /// It places calls (dispatches).
    Outbound,
    /// It answers calls placed to its numbers.
    Inbound,
    /// Both.
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    Opus,
    G722,
    Pcmu,
    Pcma,
}

#[derive(Debug, Args)]
struct TrunkArgs {
    /// Unique name.
    #[arg(long)]
    name: String,
    /// Host name or IP address of the trunk.
    #[arg(long)]
    host: String,
    /// SIP port (default 5060, 5061 for TLS).
    #[arg(long)]
    port: Option<u32>,
    /// Transport.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// Digest user name.
    #[arg(long)]
    username: Option<String>,
    /// Digest password (write-only).
    #[arg(long, env = "DIALTONE_TRUNK_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Digest realm.
    #[arg(long)]
    realm: Option<String>,
    /// Domain of the From URI.
    #[arg(long)]
    from_domain: Option<String>,
    /// Keep a registration with the trunk.
    #[arg(long)]
    register: bool,
    /// Most simultaneous calls.
    #[arg(long)]
    max_concurrent_calls: Option<u32>,
    /// Most new calls per second.
    #[arg(long)]
    max_calls_per_second: Option<u32>,
    /// TLS: a PEM file of the certificates to trust instead of the system's roots.
    #[arg(long)]
    tls_ca_file: Option<std::path::PathBuf>,
    /// TLS: do not verify the trunk's certificate (tests only).
    #[arg(long)]
    tls_no_verify: bool,
    /// TLS: a PEM file of the client certificate chain (mutual TLS).
    #[arg(long, requires = "tls_client_key_file")]
    tls_client_cert_file: Option<std::path::PathBuf>,
    /// TLS: a PEM file of the client certificate's private key.
    #[arg(long, requires = "tls_client_cert_file")]
    tls_client_key_file: Option<std::path::PathBuf>,
    /// Media encryption (SRTP, SDES keys; needs --transport tls).
    #[arg(long, value_enum)]
    srtp: Option<SrtpArg>,
    /// A network calls to the trunk's numbers may also come from (a CIDR or an address),
    /// besides the addresses its host resolves to; repeat for more.
    #[arg(long = "inbound-cidr")]
    inbound_cidrs: Vec<String>,
    /// The codecs to offer, best first, comma-separated (default: opus,g722,pcmu,pcma).
    #[arg(long, value_enum, value_delimiter = ',')]
    codecs: Vec<CodecArg>,
    /// A host besides the trunk's that `sip:` transfer destinations may name (repeat for
    /// more).
    #[arg(long = "transfer-sip-domain")]
    transfer_sip_domains: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum NumberCommand {
    /// Lists numbers.
    List,
    /// Shows one number.
    Get { id: String },
    /// Adds a number on a trunk.
    Create {
        /// The number, E.164.
        #[arg(long)]
        e164: String,
        /// The trunk's id.
        #[arg(long)]
        trunk: String,
    },
    /// Deletes a number (refused while an agent uses it).
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Lists agents.
    List,
    /// Shows one agent.
    Get { id: String },
    /// Creates an agent.
    Create(Box<AgentArgs>),
    /// Deletes an agent.
    Delete { id: String },
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// Name.
    #[arg(long)]
    name: String,
    /// Which calls it takes: it places them (outbound), answers calls to its numbers
    /// (inbound), or both.
    #[arg(long, value_enum, default_value = "outbound")]
    direction: DirectionArg,
    /// Default instructions of its calls.
    #[arg(long)]
    instructions: Option<String>,
    /// Persona.
    #[arg(long)]
    persona: Option<String>,
    /// Voice.
    #[arg(long)]
    voice: Option<String>,
    /// Language (BCP 47).
    #[arg(long)]
    language: Option<String>,
    /// `builtin:echo`, `builtin:ivr` or `grpc://host:port` (an AgentBridge server).
    #[arg(long)]
    brain: Option<String>,
    /// A number id to call from (repeat for several; the first is the primary one).
    #[arg(long = "number")]
    numbers: Vec<String>,
    /// JSON Schema of the structured result.
    #[arg(long, value_parser = json_object)]
    returns: Option<Value>,
    /// `hangup`, `continue` or `leave_message` (with --voicemail-message).
    #[arg(long)]
    voicemail_action: Option<String>,
    /// The message `leave_message` leaves after the beep.
    #[arg(long)]
    voicemail_message: Option<String>,
    /// Default webhook receiver of its calls.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Seconds to let the phone ring.
    #[arg(long)]
    ring_timeout_seconds: Option<u32>,
    /// Longest call, in seconds.
    #[arg(long)]
    max_duration_seconds: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum ProviderCommand {
    /// Lists providers.
    List,
    /// Shows one provider.
    Get { id: String },
    /// Creates a provider.
    Create(ProviderArgs),
    /// Changes the fields given, keeps the others (a rename is refused while agents name the
    /// provider by its name).
    Update {
        id: String,
        #[command(flatten)]
        fields: ProviderUpdateArgs,
    },
    /// Deletes a provider (refused while agents name it).
    Delete { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProviderKindArg {
    Openai,
    Deepgram,
    Cartesia,
    Elevenlabs,
}

impl From<ProviderKindArg> for proto::ProviderKind {
    fn from(kind: ProviderKindArg) -> Self {
        match kind {
            ProviderKindArg::Openai => Self::Openai,
            ProviderKindArg::Deepgram => Self::Deepgram,
            ProviderKindArg::Cartesia => Self::Cartesia,
            ProviderKindArg::Elevenlabs => Self::Elevenlabs,
        }
    }
}

#[derive(Debug, Args)]
struct ProviderArgs {
    /// Unique name (agents name the provider by it or by its id).
    #[arg(long)]
    name: String,
    /// The protocol it speaks.
    #[arg(long, value_enum)]
    kind: ProviderKindArg,
    /// The service's base URL (default: the kind's public service).
    #[arg(long)]
    base_url: Option<String>,
    /// The service's API key (write-only); best given through the environment. (`--api-key`
    /// is the Dialtone key the command runs with.)
    #[arg(long, env = "DIALTONE_PROVIDER_API_KEY", hide_env_values = true)]
    provider_api_key: Option<String>,
}

#[derive(Debug, Args)]
struct ProviderUpdateArgs {
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New kind.
    #[arg(long, value_enum)]
    kind: Option<ProviderKindArg>,
    /// New base URL.
    #[arg(long)]
    base_url: Option<String>,
    /// New API key of the service (write-only); best given through the environment.
    #[arg(long, env = "DIALTONE_PROVIDER_API_KEY", hide_env_values = true)]
    provider_api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
enum CallCommand {
    /// Lists calls, newest first.
    List {
        /// Only this agent's calls.
        #[arg(long)]
        agent: Option<String>,
        /// Only calls in this status.
        #[arg(long)]
        status: Option<String>,
        /// Only calls to this number.
        #[arg(long)]
        to: Option<String>,
        /// Page size (1-200).
        #[arg(long)]
        limit: Option<u32>,
        /// The previous page's next cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Shows one call's record.
    Get { id: String },
    /// Hangs a live call up.
    Hangup { id: String },
    /// Transfers a call in progress (blind, REFER); its outcome shows on the call.
    Transfer {
        id: String,
        /// The destination: E.164 or a `sip:` URI (on the trunk's host or one of its
        /// transfer SIP domains).
        #[arg(long)]
        to: String,
        /// `refer` (default: the agent's destination's mode, else refer) or `bridge`.
        #[arg(long)]
        mode: Option<String>,
    },
}

#[derive(Debug, Args)]
struct DispatchArgs {
    /// The agent's id.
    #[arg(long)]
    agent: String,
    /// Destination, E.164.
    #[arg(long)]
    to: String,
    /// Caller-ID override: another number of the agent (E.164 or id).
    #[arg(long)]
    from: Option<String>,
    /// Instructions for this call (replace the agent's).
    #[arg(long)]
    instructions: Option<String>,
    /// Context object (JSON).
    #[arg(long, value_parser = json_object)]
    context: Option<Value>,
    /// Metadata object (JSON).
    #[arg(long, value_parser = json_object)]
    metadata: Option<Value>,
    /// Webhook receiver of this call.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Idempotency key: a repeat returns the first call.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Return once dispatched instead of following the call.
    #[arg(long)]
    no_follow: bool,
}

fn json_object(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// The kinds of object `list`, `get` and `delete` work on.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Trunk,
    Number,
    Agent,
    Provider,
}

/// A connection to the daemon with its key.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    channel: Channel,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    json: bool,
}

/// The server's refusal, as the user reads it.
fn refused(status: tonic::Status) -> anyhow::Error {
    let field = status
        .metadata()
        .get("dialtone-error-field")
        .and_then(|v| v.to_str().ok())
        .map(|f| format!(" (field {f})"))
        .unwrap_or_default();
    anyhow::anyhow!("{:?}: {}{field}", status.code(), status.message())
}

impl Client {
    pub(crate) async fn connect(
        server: &str,
        key: Option<&str>,
        json: bool,
    ) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(server.to_owned())
            .with_context(|| {
                format!("{server:?} is not a gRPC endpoint like http://127.0.0.1:9090")
            })?
            .connect()
            .await
            .with_context(|| format!("cannot reach the daemon at {server}"))?;
        let authorization = key
            .map(|k| format!("Bearer {k}").parse())
            .transpose()
            .context("the API key has characters a header cannot carry")?;
        Ok(Self {
            channel,
            authorization,
            json,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(a) = &self.authorization {
            request.metadata_mut().insert("authorization", a.clone());
        }
        request
    }

    /// A call record an answer carries, as JSON or for people.
    fn show_call(&self, call: Option<&proto::Call>) {
        let v = call.map(render::call).unwrap_or_default();
        self.show(&v, render::call_record);
    }

    fn show(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", human(value));
        }
    }

    fn show_list(&self, rows: Vec<Value>, columns: &[&str]) {
        if self.json {
            self.show(&Value::Array(rows), |_| String::new());
        } else {
            println!("{}", render::table(&rows, columns));
        }
    }

    async fn list(&self, kind: Kind) -> anyhow::Result<Vec<Value>> {
        let ch = self.channel.clone();
        Ok(match kind {
            Kind::Trunk => TrunkServiceClient::new(ch)
                .list_trunks(self.request(proto::ListTrunksRequest {}))
                .await
                .map_err(refused)?
                .into_inner()
                .trunks
                .iter()
                .map(render::trunk)
                .collect(),
            Kind::Number => NumberServiceClient::new(ch)
                .list_numbers(self.request(proto::ListNumbersRequest {}))
                .await
                .map_err(refused)?
                .into_inner()
                .numbers
                .iter()
                .map(render::number)
                .collect(),
            Kind::Agent => AgentServiceClient::new(ch)
                .list_agents(self.request(proto::ListAgentsRequest {}))
                .await
                .map_err(refused)?
                .into_inner()
                .agents
                .iter()
                .map(render::agent)
                .collect(),
            Kind::Provider => ProviderServiceClient::new(ch)
                .list_providers(self.request(proto::ListProvidersRequest {}))
                .await
                .map_err(refused)?
                .into_inner()
                .providers
                .iter()
                .map(render::provider)
                .collect(),
        })
    }

    async fn get(&self, kind: Kind, id: String) -> anyhow::Result<Value> {
        let ch = self.channel.clone();
        let found = match kind {
            Kind::Trunk => TrunkServiceClient::new(ch)
                .get_trunk(self.request(proto::GetTrunkRequest { id }))
                .await
                .map_err(refused)?
                .into_inner()
                .trunk
                .as_ref()
                .map(render::trunk),
            Kind::Number => NumberServiceClient::new(ch)
                .get_number(self.request(proto::GetNumberRequest { id }))
                .await
                .map_err(refused)?
                .into_inner()
                .number
                .as_ref()
                .map(render::number),
            Kind::Agent => AgentServiceClient::new(ch)
                .get_agent(self.request(proto::GetAgentRequest { id }))
                .await
                .map_err(refused)?
                .into_inner()
                .agent
                .as_ref()
                .map(render::agent),
            Kind::Provider => ProviderServiceClient::new(ch)
                .get_provider(self.request(proto::GetProviderRequest { id }))
                .await
                .map_err(refused)?
                .into_inner()
                .provider
                .as_ref()
                .map(render::provider),
        };
        found.context("the daemon answered without the object")
    }

    async fn delete(&self, kind: Kind, id: &str) -> anyhow::Result<()> {
        let (ch, id) = (self.channel.clone(), id.to_owned());
        match kind {
            Kind::Trunk => {
                TrunkServiceClient::new(ch)
                    .delete_trunk(self.request(proto::DeleteTrunkRequest { id }))
                    .await
            }
            .map(drop),
            Kind::Number => {
                NumberServiceClient::new(ch)
                    .delete_number(self.request(proto::DeleteNumberRequest { id }))
                    .await
            }
            .map(drop),
            Kind::Agent => {
                AgentServiceClient::new(ch)
                    .delete_agent(self.request(proto::DeleteAgentRequest { id }))
                    .await
            }
            .map(drop),
            Kind::Provider => {
                ProviderServiceClient::new(ch)
                    .delete_provider(self.request(proto::DeleteProviderRequest { id }))
                    .await
            }
            .map(drop),
        }
        .map_err(refused)
    }

    pub(crate) async fn create_trunk(&self, fields: proto::TrunkFields) -> anyhow::Result<Value> {
        let r = TrunkServiceClient::new(self.channel.clone())
            .create_trunk(self.request(proto::CreateTrunkRequest {
                trunk: Some(fields),
            }))
            .await
            .map_err(refused)?;
        Ok(r.into_inner()
            .trunk
            .as_ref()
            .map(render::trunk)
            .unwrap_or_default())
    }

    pub(crate) async fn create_number(&self, e164: &str, trunk_id: &str) -> anyhow::Result<Value> {
        let r = NumberServiceClient::new(self.channel.clone())
            .create_number(self.request(proto::CreateNumberRequest {
                e164: e164.to_owned(),
                trunk_id: trunk_id.to_owned(),
            }))
            .await
            .map_err(refused)?;
        Ok(r.into_inner()
            .number
            .as_ref()
            .map(render::number)
            .unwrap_or_default())
    }

    pub(crate) async fn create_agent(&self, fields: proto::AgentFields) -> anyhow::Result<Value> {
        let r = AgentServiceClient::new(self.channel.clone())
            .create_agent(self.request(proto::CreateAgentRequest {
                agent: Some(fields),
            }))
            .await
            .map_err(refused)?;
        Ok(r.into_inner()
            .agent
            .as_ref()
            .map(render::agent)
            .unwrap_or_default())
    }

    /// Creates a provider (`id` `None`) or changes the fields `fields` sets.
    async fn save_provider(
        &self,
        id: Option<String>,
        fields: proto::ProviderFields,
    ) -> anyhow::Result<Value> {
        let mut providers = ProviderServiceClient::new(self.channel.clone());
        let saved = match id {
            None => {
                providers
                    .create_provider(self.request(proto::CreateProviderRequest {
                        provider: Some(fields),
                    }))
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .provider
            }
            Some(id) => {
                providers
                    .update_provider(self.request(proto::UpdateProviderRequest {
                        id,
                        provider: Some(fields),
                    }))
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .provider
            }
        };
        saved
            .as_ref()
            .map(render::provider)
            .context("the daemon answered without the provider")
    }

    /// Dispatches a call; with `follow`, prints its status changes until it ends. Returns the
    /// last record seen.
    pub(crate) async fn call(
        &self,
        request: proto::DispatchCallRequest,
        follow: bool,
    ) -> anyhow::Result<Value> {
        let mut calls = CallServiceClient::new(self.channel.clone());
        let dispatched = calls
            .dispatch_call(self.request(request))
            .await
            .map_err(refused)?
            .into_inner();
        let call = dispatched.call.context("the daemon returned no call")?;
        let id = call.id.clone();
        if !self.json {
            let note = if dispatched.replayed {
                " (the idempotency key named an earlier call)"
            } else {
                ""
            };
            println!("dispatched call {id}{note}");
        }
        if !follow {
            return Ok(render::call(&call));
        }
        let mut stream = calls
            .watch_call(self.request(proto::WatchCallRequest { id: id.clone() }))
            .await
            .map_err(refused)?
            .into_inner();
        let mut last = render::call(&call);
        let mut shown = render::status_name(call.status);
        if !self.json {
            println!("  {}  {shown}", call.created_at);
        }
        while let Some(update) = stream.message().await.map_err(refused)? {
            let Some(c) = update.call else { continue };
            last = render::call(&c);
            let status = render::status_name(c.status);
            if status != shown && !self.json {
                let at = [&c.ended_at, &c.answered_at, &c.ringing_at, &c.dialed_at]
                    .into_iter()
                    .flatten()
                    .next()
                    .unwrap_or(&c.created_at);
                println!("  {at}  {status}");
            }
            shown = status;
        }
        // The stream ends with the final state; read the record once more for the result,
        // which the brain may write as the call ends.
        let record = calls
            .get_call(self.request(proto::GetCallRequest { id }))
            .await
            .map_err(refused)?
            .into_inner()
            .call
            .map_or(last, |c| render::call(&c));
        Ok(record)
    }
}

fn trunk_fields(a: TrunkArgs) -> anyhow::Result<proto::TrunkFields> {
    let read = |path: Option<std::path::PathBuf>| -> anyhow::Result<Option<String>> {
        path.map(|p| {
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        })
        .transpose()
    };
    Ok(proto::TrunkFields {
        name: Some(a.name),
        host: Some(a.host),
        port: a.port,
        transport: match a.transport {
            TransportArg::Udp => proto::TrunkTransport::Udp,
            TransportArg::Tcp => proto::TrunkTransport::Tcp,
            TransportArg::Tls => proto::TrunkTransport::Tls,
        } as i32,
        username: a.username,
        password: a.password,
        realm: a.realm,
        from_domain: a.from_domain,
        max_concurrent_calls: a.max_concurrent_calls,
        max_calls_per_second: a.max_calls_per_second,
        register: Some(a.register),
        tls_ca_pem: read(a.tls_ca_file)?,
        tls_verify: a.tls_no_verify.then_some(false),
        tls_client_cert_pem: read(a.tls_client_cert_file)?,
        tls_client_key_pem: read(a.tls_client_key_file)?,
        srtp: match a.srtp {
            None => proto::SrtpMode::Unspecified,
            Some(SrtpArg::Off) => proto::SrtpMode::Off,
            Some(SrtpArg::Optional) => proto::SrtpMode::Optional,
            Some(SrtpArg::Required) => proto::SrtpMode::Required,
        } as i32,
        inbound_cidrs: (!a.inbound_cidrs.is_empty()).then_some(proto::Networks {
            cidrs: a.inbound_cidrs,
        }),
        codecs: a
            .codecs
            .into_iter()
            .map(|c| match c {
                CodecArg::Opus => proto::Codec::Opus as i32,
                CodecArg::G722 => proto::Codec::G722 as i32,
                CodecArg::Pcmu => proto::Codec::Pcmu as i32,
                CodecArg::Pcma => proto::Codec::Pcma as i32,
            })
            .collect(),
        transfer_sip_domains: (!a.transfer_sip_domains.is_empty()).then_some(proto::HostList {
            hosts: a.transfer_sip_domains,
        }),
    })
}

fn agent_fields(a: AgentArgs) -> proto::AgentFields {
    proto::AgentFields {
        name: Some(a.name),
        direction: Some(
            match a.direction {
                DirectionArg::Outbound => "outbound",
                DirectionArg::Inbound => "inbound",
                DirectionArg::Both => "both",
            }
            .into(),
        ),
        persona: a.persona,
        voice: a.voice,
        language: a.language,
        instructions: a.instructions,
        returns: a.returns.as_ref().map(to_struct),
        voicemail_action: a.voicemail_action.map(|action| proto::VoicemailAction {
            action,
            message: a.voicemail_message,
        }),
        webhook_url: a.webhook_url,
        primary_number_id: a.numbers.first().cloned(),
        number_ids: a.numbers,
        brain: a.brain,
        ring_timeout_seconds: a.ring_timeout_seconds,
        max_duration_seconds: a.max_duration_seconds,
        ..proto::AgentFields::default()
    }
}

const TRUNK_COLUMNS: &[&str] = &[
    "id",
    "name",
    "host",
    "port",
    "transport",
    "registration_state",
];
const NUMBER_COLUMNS: &[&str] = &["id", "e164", "trunk_id", "answering_agent_id"];
const AGENT_COLUMNS: &[&str] = &["id", "name", "brain", "primary_number_id"];
const PROVIDER_COLUMNS: &[&str] = &["id", "name", "kind", "base_url", "has_api_key"];
const CALL_COLUMNS: &[&str] = &["id", "to", "status", "created_at", "talk_duration_ms"];

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Demo = cli.command {
        return demo::run(cli.json).await;
    }
    let c = Client::connect(&cli.server, cli.api_key.as_deref(), cli.json).await?;
    let deleted = |id: String| serde_json::json!({ "deleted": id });
    match cli.command {
        Command::Demo => unreachable!("handled above"),
        Command::Trunks(TrunkCommand::List) => {
            c.show_list(c.list(Kind::Trunk).await?, TRUNK_COLUMNS)
        }
        Command::Numbers(NumberCommand::List) => {
            c.show_list(c.list(Kind::Number).await?, NUMBER_COLUMNS)
        }
        Command::Agents(AgentCommand::List) => {
            c.show_list(c.list(Kind::Agent).await?, AGENT_COLUMNS)
        }
        Command::Trunks(TrunkCommand::Get { id }) => {
            c.show(&c.get(Kind::Trunk, id).await?, render::record)
        }
        Command::Numbers(NumberCommand::Get { id }) => {
            c.show(&c.get(Kind::Number, id).await?, render::record)
        }
        Command::Agents(AgentCommand::Get { id }) => {
            c.show(&c.get(Kind::Agent, id).await?, render::record)
        }
        Command::Trunks(TrunkCommand::Delete { id }) => {
            c.delete(Kind::Trunk, &id).await?;
            c.show(&deleted(id), render::record);
        }
        Command::Numbers(NumberCommand::Delete { id }) => {
            c.delete(Kind::Number, &id).await?;
            c.show(&deleted(id), render::record);
        }
        Command::Agents(AgentCommand::Delete { id }) => {
            c.delete(Kind::Agent, &id).await?;
            c.show(&deleted(id), render::record);
        }
        Command::Trunks(TrunkCommand::Create(args)) => {
            c.show(&c.create_trunk(trunk_fields(*args)?).await?, render::record);
        }
        Command::Numbers(NumberCommand::Create { e164, trunk }) => {
            c.show(&c.create_number(&e164, &trunk).await?, render::record);
        }
        Command::Agents(AgentCommand::Create(args)) => {
            c.show(&c.create_agent(agent_fields(*args)).await?, render::record);
        }
        Command::Providers(ProviderCommand::List) => {
            c.show_list(c.list(Kind::Provider).await?, PROVIDER_COLUMNS)
        }
        Command::Providers(ProviderCommand::Get { id }) => {
            c.show(&c.get(Kind::Provider, id).await?, render::record)
        }
        Command::Providers(ProviderCommand::Delete { id }) => {
            c.delete(Kind::Provider, &id).await?;
            c.show(&deleted(id), render::record);
        }
        Command::Providers(ProviderCommand::Create(a)) => {
            let fields = proto::ProviderFields {
                name: Some(a.name),
                kind: proto::ProviderKind::from(a.kind) as i32,
                base_url: a.base_url,
                api_key: a.provider_api_key,
            };
            c.show(&c.save_provider(None, fields).await?, render::record);
        }
        Command::Providers(ProviderCommand::Update { id, fields: a }) => {
            let fields = proto::ProviderFields {
                name: a.name,
                kind: a.kind.map_or(proto::ProviderKind::Unspecified, Into::into) as i32,
                base_url: a.base_url,
                api_key: a.provider_api_key,
            };
            c.show(&c.save_provider(Some(id), fields).await?, render::record);
        }
        Command::Calls(command) => {
            let mut calls = CallServiceClient::new(c.channel.clone());
            match command {
                CallCommand::List {
                    agent,
                    status,
                    to,
                    limit,
                    cursor,
                } => {
                    let status = match status {
                        Some(s) => render::status_of(&s)
                            .with_context(|| format!("--status {s:?} is not a call status (queued, dialing, ringing, in_progress, completed, busy, no_answer, failed, canceled)"))?
                            as i32,
                        None => 0,
                    };
                    let r = calls
                        .list_calls(c.request(proto::ListCallsRequest {
                            agent_id: agent,
                            status,
                            to,
                            limit,
                            cursor,
                            ..proto::ListCallsRequest::default()
                        }))
                        .await
                        .map_err(refused)?
                        .into_inner();
                    let rows: Vec<Value> = r.calls.iter().map(render::call).collect();
                    if c.json {
                        c.show(
                            &serde_json::json!({"data": rows, "next_cursor": r.next_cursor}),
                            |_| String::new(),
                        );
                    } else {
                        println!("{}", render::table(&rows, CALL_COLUMNS));
                        if let Some(next) = r.next_cursor {
                            println!("next page: --cursor {next}");
                        }
                    }
                }
                CallCommand::Get { id } => {
                    let r = calls
                        .get_call(c.request(proto::GetCallRequest { id }))
                        .await
                        .map_err(refused)?;
                    c.show_call(r.into_inner().call.as_ref());
                }
                CallCommand::Hangup { id } => {
                    let r = calls
                        .hangup_call(c.request(proto::HangupCallRequest { id }))
                        .await
                        .map_err(refused)?;
                    c.show_call(r.into_inner().call.as_ref());
                }
                CallCommand::Transfer { id, to, mode } => {
                    let r = calls
                        .transfer_call(c.request(proto::TransferCallRequest { id, to, mode }))
                        .await
                        .map_err(refused)?;
                    c.show_call(r.into_inner().call.as_ref());
                }
            }
        }
        Command::Call(args) => {
            let request = proto::DispatchCallRequest {
                agent_id: args.agent,
                to: args.to,
                from_number: args.from,
                instructions: args.instructions,
                context: args.context.as_ref().map(to_struct),
                webhook_url: args.webhook_url,
                metadata: args.metadata.as_ref().map(to_struct),
                idempotency_key: args.idempotency_key,
            };
            let record = c.call(request, !args.no_follow).await?;
            c.show(&record, render::call_record);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dialtone: {error:#}");
            ExitCode::FAILURE
        }
    }
}
