//! The load driver: dispatches calls through Dialtone's gRPC API at a rate up to a concurrency,
//! waits for them to end, and reads back what Dialtone recorded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dialtone_proto::call_service_client::CallServiceClient;
use dialtone_proto::{CallStatus, DispatchCallRequest, GetCallRequest};
use tonic::transport::Channel;

use crate::LoadgenError;
use crate::report::{Percentiles, Report};
use crate::sim::{CallRecord, Simulator};

/// The endpointing silence of the agents the load creates: the silence after a callee's
/// talkspurt before the daemon takes it as the end of a turn.
pub const ENDPOINTING: Duration = Duration::from_millis(500);

/// The `builtin:agent` brain, whose model, speech recognition and synthesis the load points at
/// an `openai` provider (the scripted one of [`crate::scripted`] in the bench).
pub const BUILTIN_AGENT: &str = "builtin:agent";

/// What to dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// The agent to run.
    pub agent_id: String,
    /// The destination number.
    pub to: String,
    /// How many calls.
    pub calls: u64,
    /// Dispatches per second.
    pub rate: f64,
    /// Most calls live at once (dispatched and not yet ended at the simulator).
    pub max_concurrency: u64,
    /// The whole run ends by then, whatever is left.
    pub deadline: Duration,
    /// Print a progress line every second to stderr.
    pub progress: bool,
    /// A process whose CPU the progress line shows (the daemon under test), with the
    /// kernel's clock ticks per second ([`crate::clock_ticks`]).
    pub watch_cpu: Option<(u32, f64)>,
    /// The webhook receiver every dispatched call names, if any.
    pub webhook_url: Option<String>,
}

/// A gRPC connection with its key.
#[derive(Debug, Clone)]
pub struct Control {
    channel: Channel,
    calls: CallServiceClient<Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Control {
    /// Connects to the daemon's gRPC `endpoint` (`http://host:port`) with `api_key`.
    pub async fn connect(endpoint: &str, api_key: &str) -> Result<Self, LoadgenError> {
        let connect = |source| LoadgenError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        };
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| LoadgenError::Grpc {
                call: "connect",
                status: Box::new(tonic::Status::invalid_argument(e.to_string())),
            })?
            .connect()
            .await
            .map_err(connect)?;
        Ok(Self {
            calls: CallServiceClient::new(channel.clone()),
            channel,
            authorization: format!("Bearer {api_key}").parse().ok(),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(a) = &self.authorization {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }

    /// Creates an `openai` provider `name` at `base_url`, for a [`BUILTIN_AGENT`] load.
    pub async fn create_openai_provider(
        &self,
        name: &str,
        base_url: &str,
    ) -> Result<(), LoadgenError> {
        use dialtone_proto::provider_service_client::ProviderServiceClient;
        ProviderServiceClient::new(self.channel.clone())
            .create_provider(self.request(dialtone_proto::CreateProviderRequest {
                provider: Some(dialtone_proto::ProviderFields {
                    name: Some(name.to_owned()),
                    kind: dialtone_proto::ProviderKind::Openai as i32,
                    base_url: Some(base_url.to_owned()),
                    api_key: Some("sk-loadgen".into()),
                }),
            }))
            .await
            .map_err(|status| LoadgenError::Grpc {
                call: "CreateProvider",
                status: Box::new(status),
            })?;
        Ok(())
    }

    /// Creates a trunk pointing at the simulator, a number on it, and an agent running `brain`
    /// from that number, its endpointing silence [`ENDPOINTING`]; a [`BUILTIN_AGENT`] is
    /// interrupted at the onset of the caller's speech and takes its model, speech recognition
    /// and synthesis from `provider` (a provider's name). Returns the agent's id.
    pub async fn set_up_agent(
        &self,
        simulator: std::net::SocketAddr,
        brain: &str,
        provider: Option<&str>,
    ) -> Result<String, LoadgenError> {
        use dialtone_proto::agent_service_client::AgentServiceClient;
        use dialtone_proto::number_service_client::NumberServiceClient;
        use dialtone_proto::trunk_service_client::TrunkServiceClient;
        let grpc = |call| {
            move |status| LoadgenError::Grpc {
                call,
                status: Box::new(status),
            }
        };
        let trunk = TrunkServiceClient::new(self.channel.clone())
            .create_trunk(self.request(dialtone_proto::CreateTrunkRequest {
                trunk: Some(dialtone_proto::TrunkFields {
                    name: Some(format!("loadgen-{}", simulator.port())),
                    host: Some(simulator.ip().to_string()),
                    port: Some(u32::from(simulator.port())),
                    transport: dialtone_proto::TrunkTransport::Udp as i32,
                    ..dialtone_proto::TrunkFields::default()
                }),
            }))
            .await
            .map_err(grpc("CreateTrunk"))?
            .into_inner()
            .trunk
            .unwrap_or_default();
        let number = NumberServiceClient::new(self.channel.clone())
            .create_number(self.request(dialtone_proto::CreateNumberRequest {
                e164: format!("+1555{:07}", simulator.port()),
                trunk_id: trunk.id,
            }))
            .await
            .map_err(grpc("CreateNumber"))?
            .into_inner()
            .number
            .unwrap_or_default();
        let agent = AgentServiceClient::new(self.channel.clone())
            .create_agent(self.request(dialtone_proto::CreateAgentRequest {
                agent:
                    Some(
                        dialtone_proto::AgentFields {
                            name: Some("loadgen".into()),
                            direction: Some("outbound".into()),
                            brain: Some(brain.to_owned()),
                            primary_number_id: Some(number.id.clone()),
                            number_ids: vec![number.id],
                            endpointing_silence_ms: u32::try_from(ENDPOINTING.as_millis()).ok(),
                            // `builtin:agent` is interrupted at the onset of the caller's speech, like
                            // `builtin:echo` (it otherwise waits for a minimum of speech); a Media
                            // Streams app keeps its default (off: the app decides).
                            barge_in:
                                (brain == BUILTIN_AGENT).then(|| {
                                    dialtone_proto::json::to_value(&serde_json::json!("on"))
                                }),
                            llm: provider.map(|p| dialtone_proto::LlmSetting {
                                provider: p.to_owned(),
                                model: "scripted".into(),
                                ..dialtone_proto::LlmSetting::default()
                            }),
                            stt: provider.map(|p| dialtone_proto::SpeechSetting {
                                provider: p.to_owned(),
                                model: Some("scripted".into()),
                            }),
                            tts: provider.map(|p| dialtone_proto::SpeechSetting {
                                provider: p.to_owned(),
                                model: Some("scripted".into()),
                            }),
                            ..dialtone_proto::AgentFields::default()
                        },
                    ),
            }))
            .await
            .map_err(grpc("CreateAgent"))?
            .into_inner()
            .agent
            .unwrap_or_default();
        Ok(agent.id)
    }

    async fn dispatch(
        &self,
        agent_id: &str,
        to: &str,
        webhook_url: Option<String>,
    ) -> Result<String, tonic::Status> {
        let mut calls = self.calls.clone();
        let r = calls
            .dispatch_call(self.request(DispatchCallRequest {
                agent_id: agent_id.to_owned(),
                to: to.to_owned(),
                webhook_url,
                ..DispatchCallRequest::default()
            }))
            .await?;
        Ok(r.into_inner().call.map(|c| c.id).unwrap_or_default())
    }

    /// The call's status, end reason code and the RFC 4733 digits its media heard.
    async fn outcome(&self, id: &str) -> Result<(CallStatus, String, u64), tonic::Status> {
        let mut calls = self.calls.clone();
        let call = calls
            .get_call(self.request(GetCallRequest { id: id.to_owned() }))
            .await?
            .into_inner()
            .call
            .unwrap_or_default();
        let dtmf = call
            .media_stats
            .as_ref()
            .and_then(|m| m.fields.get("dtmf_digits"))
            .and_then(|v| match v.kind {
                Some(prost_types::value::Kind::NumberValue(n)) => Some(n as u64),
                _ => None,
            })
            .unwrap_or(0);
        Ok((
            CallStatus::try_from(call.status).unwrap_or(CallStatus::Unspecified),
            call.end_reason.map(|r| r.code).unwrap_or_default(),
            dtmf,
        ))
    }
}

fn is_final(status: CallStatus) -> bool {
    matches!(
        status,
        CallStatus::Completed
            | CallStatus::Busy
            | CallStatus::NoAnswer
            | CallStatus::Failed
            | CallStatus::Canceled
    )
}

fn status_name(status: CallStatus) -> String {
    status
        .as_str_name()
        .trim_start_matches("CALL_STATUS_")
        .to_ascii_lowercase()
}

/// Runs `plan` against the daemon behind `control`, its trunk pointing at `sim`; stops the
/// simulator and reports.
pub async fn run(
    control: &Control,
    sim: Simulator,
    plan: &LoadPlan,
) -> Result<(Report, Vec<CallRecord>), LoadgenError> {
    let started = Instant::now();
    let deadline = started + plan.deadline;
    let mut dispatches = Vec::new();
    let mut last_progress = started;
    let live = std::sync::Arc::new(std::sync::Mutex::new(LiveFigures::default()));
    let mut meter = Progress::new(started, plan.watch_cpu);
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    for n in 0..plan.calls {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        // Hold back while the concurrency is reached.
        loop {
            let counts = sim.counts();
            let live = (n).saturating_sub(counts.ended);
            if live < plan.max_concurrency || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Instant::now() >= deadline {
            break;
        }
        let c = control.clone();
        let (agent, to, hook) = (
            plan.agent_id.clone(),
            plan.to.clone(),
            plan.webhook_url.clone(),
        );
        let figures = live.clone();
        dispatches.push(tokio::spawn(async move {
            let at = Instant::now();
            let result = c.dispatch(&agent, &to, hook).await;
            let mut f = figures.lock().unwrap_or_else(|e| e.into_inner());
            match &result {
                Ok(id) => f.unmatched.push((id.clone(), at)),
                Err(_) => f.refused += 1,
            }
            (at, result)
        }));
        if plan.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            meter.line(&sim, &live, n + 1);
        }
    }
    let dispatch_phase = started.elapsed();
    let mut ids = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut dispatch_times = Vec::new();
    for d in dispatches {
        match d.await {
            Ok((at, Ok(id))) => {
                ids.push(id.clone());
                dispatch_times.push((id, at));
            }
            Ok((_, Err(status))) => {
                *errors.entry(format!("{:?}", status.code())).or_default() += 1;
            }
            Err(_) => *errors.entry("task".into()).or_default() += 1,
        }
    }
    // Every accepted call ends at the simulator (or the deadline passes).
    while sim.counts().ended < ids.len() as u64 && Instant::now() < deadline {
        if plan.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            meter.line(&sim, &live, plan.calls);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latency: Vec<f64> = dispatch_times
        .iter()
        .filter_map(|(id, at)| {
            sim.offered_at(id)
                .map(|o| o.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    let counts = sim.counts();
    let answer_delay = sim.answer_delay();
    let records = sim.stop().await;
    // The daemon's half of answering: INVITE → ACK of the 200, less the callee's own delay.
    let mut invite_to_ack: Vec<f64> = records
        .iter()
        .filter_map(|r| {
            let answering = r.answered_at?.saturating_duration_since(r.offered_at?);
            Some(answering.saturating_sub(answer_delay).as_secs_f64() * 1000.0)
        })
        .collect();
    // What Dialtone recorded, once each call has its final status (a moment after the BYE).
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut end_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed_end_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut dtmf_digits_heard = 0;
    let settle = Instant::now() + Duration::from_secs(15);
    for id in &ids {
        let mut outcome = control.outcome(id).await;
        while matches!(&outcome, Ok((s, _, _)) if !is_final(*s)) && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(50)).await;
            outcome = control.outcome(id).await;
        }
        match outcome {
            Ok((status, reason, dtmf)) => {
                dtmf_digits_heard += dtmf;
                *statuses.entry(status_name(status)).or_default() += 1;
                if !reason.is_empty() {
                    if status != CallStatus::Completed {
                        *failed_end_reasons.entry(reason.clone()).or_default() += 1;
                    }
                    *end_reasons.entry(reason).or_default() += 1;
                }
            }
            Err(status) => {
                *statuses
                    .entry(format!("unreadable ({:?})", status.code()))
                    .or_default() += 1;
            }
        }
    }
    let report = Report::new(
        plan,
        &records,
        crate::report::Dispatch {
            dispatched: ids.len() as u64,
            errors,
            duration: dispatch_phase,
            dispatch_to_invite_ms: Percentiles::of(&mut latency),
            invite_to_ack_ms: Percentiles::of(&mut invite_to_ack),
            max_concurrent: counts.max_live,
            media_errors: counts.media_errors,
            timeouts: counts.timeouts,
            statuses,
            end_reasons,
            failed_end_reasons,
            dtmf_digits_heard,
        },
    );
    Ok((report, records))
}

/// What the dispatch tasks report for the progress line.
#[derive(Debug, Default)]
struct LiveFigures {
    /// Accepted dispatches whose INVITE the progress line has not yet timed.
    unmatched: Vec<(String, Instant)>,
    /// Dispatches Dialtone refused.
    refused: u64,
}

/// The once-a-second progress line: calls dialed, live, ended and failed; offers per second
/// over the last second; the watched process's CPU; dispatch → INVITE p99 of the last second.
struct Progress {
    started: Instant,
    last: Instant,
    last_offered: u64,
    watch_cpu: Option<(u32, f64)>,
    last_cpu: Option<f64>,
}

impl Progress {
    fn new(started: Instant, watch_cpu: Option<(u32, f64)>) -> Self {
        Self {
            started,
            last: started,
            last_offered: 0,
            last_cpu: watch_cpu
                .and_then(|(pid, ticks)| crate::process_usage(pid, ticks))
                .map(|u| u.0),
            watch_cpu,
        }
    }

    fn line(&mut self, sim: &Simulator, live: &std::sync::Mutex<LiveFigures>, dispatched: u64) {
        let c = sim.counts();
        let now = Instant::now();
        let elapsed = now
            .saturating_duration_since(self.last)
            .as_secs_f64()
            .max(0.001);
        let cps = c.offered.saturating_sub(self.last_offered) as f64 / elapsed;
        let cpu = self
            .watch_cpu
            .and_then(|(pid, ticks)| crate::process_usage(pid, ticks))
            .map(|u| u.0);
        let cpu_text = match (cpu, self.last_cpu) {
            (Some(now_s), Some(before)) => {
                format!("  cpu {:.0} %", (now_s - before) * 100.0 / elapsed)
            }
            _ => String::new(),
        };
        let (mut invite_ms, refused) = {
            let mut f = live.lock().unwrap_or_else(|e| e.into_inner());
            let mut timed = Vec::new();
            f.unmatched.retain(|(id, at)| match sim.offered_at(id) {
                Some(offered) => {
                    timed.push(offered.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                    false
                }
                None => true,
            });
            (timed, f.refused)
        };
        let p99 = if invite_ms.is_empty() {
            String::new()
        } else {
            format!(
                "  dispatch→INVITE p99 {:.1} ms",
                crate::percentile(&mut invite_ms, 99.0)
            )
        };
        eprintln!(
            "{:6.1} s  dialed {dispatched}  live {}  ended {}  failed {}  {cps:.0} calls/s{cpu_text}{p99}",
            now.saturating_duration_since(self.started).as_secs_f64(),
            c.live,
            c.ended,
            refused + c.media_errors + c.timeouts,
        );
        self.last = now;
        self.last_offered = c.offered;
        self.last_cpu = cpu;
    }
}
