//! The call setup bench (`dialtone-loadgen cps`, issue 31 "call setup at carrier speed"): how
//! many calls per second a `dialtoned` sets up and tears down, and what each costs.
//!
//! For each rate R (ascending), R × seconds calls are dispatched at R per second through the
//! gRPC API ([`crate::load::run`], concurrency capped only at R × (hold + 5 s)), each answered by
//! the simulator after the answer delay, streamed RTP to `builtin:echo`, and hung up by the
//! simulator after the hold. Each run gets a fresh daemon ([`crate::daemon`]): one daemon at a
//! time owns the RTP port range, every rate starts from an empty database, and the binaries
//! compared are treated alike. A run reports the dispatch rate achieved, the setup latencies
//! (dispatch → INVITE, INVITE → ACK less the answer delay, answer → first RTP back), its
//! failures by cause, and CPU per call: the daemon's (from `/proc`, over the run) and the load
//! generator's own (it shares the machine).
//!
//! The media's share is measured once per binary, at the first rate: the run is repeated with
//! the hold 2 s longer, and the difference in CPU per call over those 2 s is the media's CPU
//! per call-second ([`Calibration`]); the lifecycle's CPU per call, media excluded, is the CPU
//! per call less that times the hold.
//!
//! A run is ok when nothing failed and dispatch → INVITE p99 is within 100 ms ([`setup_ok`]);
//! a binary's **ceiling** is its first rate not ok ([`ceiling`]), after which it runs no more
//! rates. With a second binary (`--before`) the rates alternate between them (R on the one
//! before, R on this one, then the next rate), so both sets of figures come from one run on one
//! machine. With webhooks, every call names a receiver of this process
//! ([`crate::webhook_sink`]) and a call whose `call.ended` never came within 15 s of the end
//! is a failure (`webhook_missing`). With SIPp, its UAC against its UAS runs at each rate
//! ([`crate::sipp`]) until it fails or takes over 10% longer than the calls need: its ceiling.
//! [`run`] writes `cps.json`, `cps.md` and `cps.png` to the results directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::callee::CalleeConfig;
use crate::daemon::{BENCH_KEY, Daemon, DaemonSpec};
use crate::load::{self, Control, LoadPlan};
use crate::report::{Dispatch, Percentiles, Report};
use crate::sim::Simulator;
use crate::sipp::{self, SippFigures};
use crate::voice::VoiceScript;
use crate::webhook_sink::{WebhookSink, WebhookTally};
use crate::{LoadgenError, clock_ticks, process_usage};

/// A run is ok only with dispatch → INVITE p99 within this, ms.
pub const SETUP_P99_BUDGET_MS: f64 = 100.0;
/// The calibration run holds its calls this much longer.
pub const CALIBRATION_EXTRA: Duration = Duration::from_secs(2);
/// How long after a run's calls end their final webhooks may take.
pub const WEBHOOK_WAIT: Duration = Duration::from_secs(15);
/// SIPp keeps up at a rate when it takes at most this many times what its calls need.
pub const SIPP_SLACK: f64 = 1.1;
/// The concurrency cap is the rate times the hold and this.
const CONCURRENCY_SLACK: Duration = Duration::from_secs(5);

/// A `dialtoned` the bench runs, under a name for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// `before` or `current`.
    pub label: String,
    /// How to start it.
    pub spec: DaemonSpec,
}

/// The simulator every run starts (its hold is the run's; its answer delay is kept).
#[derive(Debug, Clone)]
pub struct SimulatorSpec {
    /// The callees.
    pub callee: CalleeConfig,
    /// Their RTP ports.
    pub rtp_ports: (u16, u16),
    /// What they play.
    pub script: VoiceScript,
    /// Threads streaming their RTP.
    pub stream_threads: usize,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CpsPlan {
    /// Calls per second, run in ascending order.
    pub rates: Vec<u64>,
    /// Seconds of dispatching at each rate.
    pub seconds: u64,
    /// How long the simulator holds each call before its BYE.
    pub hold: Duration,
    /// The binaries, in the order they run at each rate.
    pub binaries: Vec<Binary>,
    /// The simulator.
    pub simulator: SimulatorSpec,
    /// The destination number.
    pub to: String,
    /// Whether every call names a webhook receiver of ours.
    pub webhooks: bool,
    /// Whether SIPp runs at each rate too.
    pub sipp: bool,
    /// Where `cps.json`, `cps.md` and `cps.png` go.
    pub results: PathBuf,
}

/// One binary at one rate.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RateRun {
    /// Target calls per second.
    pub rate: u64,
    /// Calls planned (rate × seconds).
    pub planned: u64,
    /// Accepted dispatches per second of the dispatch phase.
    pub achieved_rate: f64,
    /// Calls Dialtone accepted.
    pub dispatched: u64,
    /// Calls whose final status is `completed`.
    pub completed: u64,
    /// Dispatch RPC → INVITE at the simulator, ms.
    pub dispatch_to_invite_ms: Percentiles,
    /// INVITE → ACK of the simulator's 200, less its answer delay, ms.
    pub invite_to_ack_ms: Percentiles,
    /// The 200 → the first RTP packet back, ms.
    pub answer_to_first_rtp_ms: Percentiles,
    /// Failures by cause ([`failures`]); empty when none.
    pub failures: BTreeMap<String, u64>,
    /// The daemon's CPU over the run per dispatched call, ms: from the first dispatch to the
    /// last call's record read back (one GetCall per call) and, with webhooks, delivered.
    pub daemon_cpu_ms_per_call: f64,
    /// The same less the media's share ([`Calibration::lifecycle_ms`]), once calibrated.
    pub lifecycle_cpu_ms_per_call: Option<f64>,
    /// The load generator's own CPU over the run per dispatched call, ms.
    pub loadgen_cpu_ms_per_call: f64,
    /// The webhooks received, when the calls named a receiver.
    pub webhooks: Option<WebhookTally>,
    /// No failure and dispatch → INVITE p99 within budget ([`setup_ok`]).
    pub ok: bool,
}

impl RateRun {
    /// The figures of a run at `rate` from its `report`, the CPU seconds the daemon and the load
    /// generator used over it, and the webhooks received.
    pub fn new(
        rate: u64,
        report: &Report,
        daemon_cpu_seconds: f64,
        loadgen_cpu_seconds: f64,
        webhooks: Option<WebhookTally>,
    ) -> Self {
        let d = &report.dispatch;
        let failures = failures(report.planned, d, webhooks.as_ref());
        let per_call = |seconds: f64| seconds * 1000.0 / d.dispatched.max(1) as f64;
        Self {
            rate,
            planned: report.planned,
            achieved_rate: report.achieved_rate,
            dispatched: d.dispatched,
            completed: d.statuses.get("completed").copied().unwrap_or_default(),
            dispatch_to_invite_ms: d.dispatch_to_invite_ms,
            invite_to_ack_ms: d.invite_to_ack_ms,
            answer_to_first_rtp_ms: report.media.first_packet_ms,
            ok: setup_ok(&failures, d.dispatch_to_invite_ms.p99),
            failures,
            daemon_cpu_ms_per_call: per_call(daemon_cpu_seconds),
            lifecycle_cpu_ms_per_call: None,
            loadgen_cpu_ms_per_call: per_call(loadgen_cpu_seconds),
            webhooks,
        }
    }
}

/// A run's failures by cause: dispatches refused (by gRPC code) or never made, final statuses
/// other than `completed` and their end reasons, the simulator's timeouts and media errors,
/// calls whose final webhook never came and deliveries without a signature. Causes that did
/// not happen are left out.
pub fn failures(
    planned: u64,
    d: &Dispatch,
    webhooks: Option<&WebhookTally>,
) -> BTreeMap<String, u64> {
    let refused: u64 = d.errors.values().sum();
    let mut causes: Vec<(String, u64)> = d
        .errors
        .iter()
        .map(|(code, n)| (format!("gRPC {code}"), *n))
        .collect();
    causes.push((
        "not dispatched by the deadline".into(),
        planned.saturating_sub(d.dispatched + refused),
    ));
    causes.extend(
        d.statuses
            .iter()
            .filter(|(status, _)| *status != "completed")
            .map(|(status, n)| (format!("status {status}"), *n)),
    );
    causes.extend(
        d.failed_end_reasons
            .iter()
            .map(|(reason, n)| (format!("end reason {reason}"), *n)),
    );
    causes.push(("simulator timeout".into(), d.timeouts));
    causes.push(("media error".into(), d.media_errors));
    if let Some(w) = webhooks {
        causes.push(("webhook_missing".into(), w.missing));
        causes.push(("webhook_unsigned".into(), w.unsigned));
    }
    let mut by_cause = BTreeMap::new();
    for (cause, n) in causes.into_iter().filter(|(_, n)| *n > 0) {
        *by_cause.entry(cause).or_default() += n;
    }
    by_cause
}

/// Whether a run is ok: no failure of any kind, and dispatch → INVITE p99 within
/// [`SETUP_P99_BUDGET_MS`].
pub fn setup_ok(failures: &BTreeMap<String, u64>, dispatch_to_invite_p99_ms: f64) -> bool {
    failures.is_empty() && dispatch_to_invite_p99_ms <= SETUP_P99_BUDGET_MS
}

/// The ceiling: the first rate (in the order given) whose run is not ok; `None` when all are.
pub fn ceiling(runs: impl IntoIterator<Item = (u64, bool)>) -> Option<u64> {
    runs.into_iter().find(|(_, ok)| !ok).map(|(rate, _)| rate)
}

/// The media's share of the daemon's CPU, measured at one rate by holding the calls
/// [`CALIBRATION_EXTRA`] longer.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// The rate it ran at.
    pub rate: u64,
    /// The hold of the ordinary run, ms.
    pub hold_ms: u64,
    /// The hold of the longer run, ms.
    pub long_hold_ms: u64,
    /// The daemon's CPU per call at the ordinary hold, ms.
    pub cpu_ms_per_call: f64,
    /// The same at the longer hold, ms.
    pub long_cpu_ms_per_call: f64,
    /// (long − ordinary) / the extra hold: the media's CPU per call-second, ms.
    pub media_ms_per_call_second: f64,
    /// Whether the longer run was ok itself.
    pub long_run_ok: bool,
}

impl Calibration {
    /// From the run at `hold` and the one at `long_hold`.
    pub fn new(
        rate: u64,
        hold: Duration,
        long_hold: Duration,
        short: &RateRun,
        long: &RateRun,
    ) -> Self {
        let extra = long_hold.saturating_sub(hold).as_secs_f64().max(0.001);
        Self {
            rate,
            hold_ms: hold.as_millis() as u64,
            long_hold_ms: long_hold.as_millis() as u64,
            cpu_ms_per_call: short.daemon_cpu_ms_per_call,
            long_cpu_ms_per_call: long.daemon_cpu_ms_per_call,
            media_ms_per_call_second: (long.daemon_cpu_ms_per_call - short.daemon_cpu_ms_per_call)
                / extra,
            long_run_ok: long.ok,
        }
    }

    /// The CPU of a call's lifecycle, media excluded: `cpu_ms_per_call` of a run whose calls
    /// were held `hold`, less the media's CPU over the hold.
    pub fn lifecycle_ms(&self, cpu_ms_per_call: f64, hold: Duration) -> f64 {
        cpu_ms_per_call - self.media_ms_per_call_second * hold.as_secs_f64()
    }
}

/// Everything one binary ran.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BinaryRuns {
    /// `before` or `current`.
    pub label: String,
    /// The binary.
    pub binary: String,
    /// Its runs, by rate.
    pub runs: Vec<RateRun>,
    /// Its media calibration, from the first rate.
    pub calibration: Option<Calibration>,
    /// Its first rate not ok.
    pub ceiling: Option<u64>,
}

impl BinaryRuns {
    /// Whether it goes on to the next rate: every run so far was ok.
    fn going(&self) -> bool {
        self.runs.iter().all(|r| r.ok)
    }
}

/// SIPp at one rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SippRun {
    /// Target calls per second.
    pub rate: u64,
    /// Calls made.
    pub calls: u64,
    /// What the calls need: dispatching them at the rate, then the last one's hold, s.
    pub expected_seconds: f64,
    /// What it cost and took.
    pub figures: SippFigures,
    /// Every call succeeded within [`SIPP_SLACK`] of the expected time.
    pub ok: bool,
}

impl SippRun {
    /// The run at `rate` of `calls` held `hold` that gave `figures`.
    pub fn new(rate: u64, calls: u64, hold: Duration, figures: SippFigures) -> Self {
        let expected_seconds = calls as f64 / rate.max(1) as f64 + hold.as_secs_f64();
        Self {
            rate,
            calls,
            expected_seconds,
            figures,
            ok: figures.all_succeeded && figures.elapsed_seconds <= expected_seconds * SIPP_SLACK,
        }
    }
}

/// The whole bench.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CpsReport {
    /// Seconds of dispatching at each rate.
    pub seconds: u64,
    /// The simulator's hold, ms.
    pub hold_ms: u64,
    /// The simulator's answer delay, ms.
    pub answer_delay_ms: u64,
    /// Whether the calls named a webhook receiver.
    pub webhooks: bool,
    /// Each binary's runs.
    pub binaries: Vec<BinaryRuns>,
    /// SIPp's runs, when asked for.
    pub sipp: Vec<SippRun>,
    /// SIPp's first rate not ok.
    pub sipp_ceiling: Option<u64>,
}

impl CpsReport {
    /// The report as Markdown: a table per binary, the failures of the runs not ok, the
    /// calibrations and ceilings, and SIPp's rows.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Call setup at carrier speed\n\n{} s of dispatching per rate, calls held {} ms, \
             answered after {} ms, `builtin:echo` with media{}\n",
            self.seconds,
            self.hold_ms,
            self.answer_delay_ms,
            if self.webhooks {
                ", a webhook receiver per call"
            } else {
                ""
            }
        );
        let pair = |p: &Percentiles| format!("{:.1} / {:.1}", p.p50, p.p99);
        for b in &self.binaries {
            md.push_str(&format!(
                "\n## {} ({})\n\n**ceiling: {}**\n\n\
                 | rate | achieved /s | completed / failed | dispatch→INVITE p50 / p99 / max ms | \
                 INVITE→ACK p50 / p99 ms | 200→first RTP p50 / p99 ms | daemon CPU ms/call | \
                 lifecycle ms/call | loadgen CPU ms/call | webhooks | ok |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|\n",
                b.label,
                b.binary,
                describe_ceiling(b.ceiling, b.runs.last().map(|r| r.rate))
            ));
            for r in &b.runs {
                let webhooks = r.webhooks.as_ref().map_or("—".to_owned(), |w| {
                    let per_call: Vec<String> = w
                        .events_per_call
                        .iter()
                        .map(|(events, calls)| format!("{events} × {calls}"))
                        .collect();
                    format!(
                        "{} (per call: {}; {} calls missing)",
                        w.received,
                        per_call.join(", "),
                        w.missing
                    )
                });
                md.push_str(&format!(
                    "| {} | {:.1} | {} / {} | {} / {:.1} | {} | {} | {:.3} | {} | {:.3} | {webhooks} | {} |\n",
                    r.rate,
                    r.achieved_rate,
                    r.completed,
                    r.planned.saturating_sub(r.completed),
                    pair(&r.dispatch_to_invite_ms),
                    r.dispatch_to_invite_ms.max,
                    pair(&r.invite_to_ack_ms),
                    pair(&r.answer_to_first_rtp_ms),
                    r.daemon_cpu_ms_per_call,
                    r.lifecycle_cpu_ms_per_call
                        .map_or("—".to_owned(), |l| format!("{l:.3}")),
                    r.loadgen_cpu_ms_per_call,
                    if r.ok { "yes" } else { "**no**" },
                ));
            }
            for r in b.runs.iter().filter(|r| !r.ok) {
                let causes: Vec<String> = r
                    .failures
                    .iter()
                    .map(|(cause, n)| format!("{cause}: {n}"))
                    .collect();
                md.push_str(&format!(
                    "\nat {} calls/s: dispatch → INVITE p99 {:.1} ms (budget {SETUP_P99_BUDGET_MS} ms); failures: {}\n",
                    r.rate,
                    r.dispatch_to_invite_ms.p99,
                    if causes.is_empty() {
                        "none".to_owned()
                    } else {
                        causes.join(", ")
                    }
                ));
            }
            if let Some(c) = &b.calibration {
                md.push_str(&format!(
                    "\nmedia calibration at {} calls/s: {:.3} ms CPU per call held {} ms, {:.3} ms \
                     held {} ms{}: media {:.3} ms CPU per call-second\n",
                    c.rate,
                    c.cpu_ms_per_call,
                    c.hold_ms,
                    c.long_cpu_ms_per_call,
                    c.long_hold_ms,
                    if c.long_run_ok {
                        ""
                    } else {
                        " (that run was not ok)"
                    },
                    c.media_ms_per_call_second
                ));
            }
        }
        if !self.sipp.is_empty() {
            md.push_str(&format!(
                "\n## SIPp UAC → SIPp UAS, same rates and hold, no media\n\n**ceiling: {}**\n\n\
                 | rate | calls | elapsed s (expected) | CPU ms/call, both ends | all succeeded | ok |\n\
                 |---|---|---|---|---|---|\n",
                describe_ceiling(self.sipp_ceiling, self.sipp.last().map(|s| s.rate))
            ));
            for s in &self.sipp {
                md.push_str(&format!(
                    "| {} | {} | {:.2} ({:.2}) | {:.3} | {} | {} |\n",
                    s.rate,
                    s.calls,
                    s.figures.elapsed_seconds,
                    s.expected_seconds,
                    s.figures.cpu_ms_per_call,
                    if s.figures.all_succeeded { "yes" } else { "no" },
                    if s.ok { "yes" } else { "**no**" },
                ));
            }
        }
        md
    }
}

fn describe_ceiling(ceiling: Option<u64>, last: Option<u64>) -> String {
    match (ceiling, last) {
        (Some(rate), _) => format!("{rate} calls/s (the first rate not ok)"),
        (None, Some(top)) => format!("not reached up to {top} calls/s"),
        (None, None) => "nothing ran".to_owned(),
    }
}

/// Runs the bench and writes its results; returns the report.
pub async fn run(plan: &CpsPlan) -> Result<CpsReport, LoadgenError> {
    let ticks = clock_ticks();
    let sink = if plan.webhooks {
        Some(WebhookSink::start().await?)
    } else {
        None
    };
    let mut rates = plan.rates.clone();
    rates.sort_unstable();
    rates.dedup();
    let mut report = CpsReport {
        seconds: plan.seconds,
        hold_ms: plan.hold.as_millis() as u64,
        answer_delay_ms: plan.simulator.callee.answer_delay.as_millis() as u64,
        webhooks: plan.webhooks,
        binaries: plan
            .binaries
            .iter()
            .map(|b| BinaryRuns {
                label: b.label.clone(),
                binary: b.spec.binary.display().to_string(),
                ..BinaryRuns::default()
            })
            .collect(),
        ..CpsReport::default()
    };
    std::fs::create_dir_all(&plan.results).map_err(LoadgenError::io(format!(
        "creating {}",
        plan.results.display()
    )))?;
    let long_hold = plan.hold + CALIBRATION_EXTRA;
    let mut sipp_going = plan.sipp;
    for &rate in &rates {
        for (binary, runs) in plan.binaries.iter().zip(&mut report.binaries) {
            if !runs.going() {
                continue;
            }
            eprintln!("== {}: {rate} calls/s ==", binary.label);
            let mut run = run_once(plan, binary, rate, plan.hold, sink.as_ref(), ticks).await?;
            if runs.calibration.is_none() {
                eprintln!(
                    "== {}: {rate} calls/s held {} ms (media calibration) ==",
                    binary.label,
                    long_hold.as_millis()
                );
                let long = run_once(plan, binary, rate, long_hold, sink.as_ref(), ticks).await?;
                runs.calibration = Some(Calibration::new(rate, plan.hold, long_hold, &run, &long));
            }
            run.lifecycle_cpu_ms_per_call = runs
                .calibration
                .map(|c| c.lifecycle_ms(run.daemon_cpu_ms_per_call, plan.hold));
            runs.runs.push(run);
            runs.ceiling = ceiling(runs.runs.iter().map(|r| (r.rate, r.ok)));
        }
        if sipp_going {
            eprintln!("== SIPp: {rate} calls/s ==");
            let calls = rate * plan.seconds;
            let figures = sipp::reference(calls, rate as f64, plan.hold, ticks)?;
            let run = SippRun::new(rate, calls, plan.hold, figures);
            sipp_going = run.ok;
            report.sipp.push(run);
            report.sipp_ceiling = ceiling(report.sipp.iter().map(|s| (s.rate, s.ok)));
        }
        if !sipp_going && report.binaries.iter().all(|b| !b.going()) {
            break;
        }
    }
    write(&plan.results, &report)?;
    Ok(report)
}

/// One run of `binary` at `rate` with calls held `hold`, on a daemon of its own.
async fn run_once(
    plan: &CpsPlan,
    binary: &Binary,
    rate: u64,
    hold: Duration,
    sink: Option<&WebhookSink>,
    ticks: f64,
) -> Result<RateRun, LoadgenError> {
    let daemon = Daemon::start(&DaemonSpec {
        allow_loopback: binary.spec.allow_loopback || sink.is_some(),
        ..binary.spec.clone()
    })?;
    let pid = daemon.pid();
    let control = Control::connect(&daemon.endpoint(), BENCH_KEY).await?;
    let sim = Simulator::start(
        CalleeConfig {
            hold: Some(hold),
            ..plan.simulator.callee.clone()
        },
        plan.simulator.rtp_ports,
        plan.simulator.script.clone(),
        plan.simulator.stream_threads,
    )
    .await?;
    let agent = control
        .set_up_agent(sim.sip_addr, "builtin:echo", None)
        .await?;
    let calls = rate * plan.seconds;
    let tag = format!("{}-{rate}-{}", binary.label, hold.as_millis());
    let load_plan = LoadPlan {
        agent_id: agent,
        to: plan.to.clone(),
        calls,
        rate: rate as f64,
        max_concurrency: (rate as f64 * (hold + CONCURRENCY_SLACK).as_secs_f64()).ceil() as u64,
        deadline: Duration::from_secs(plan.seconds) + hold * 2 + Duration::from_secs(60),
        progress: true,
        watch_cpu: Some((pid, ticks)),
        webhook_url: sink.map(|s| s.url(&tag)),
    };
    let usage = |pid: u32| {
        process_usage(pid, ticks)
            .map(|(cpu, _)| cpu)
            .ok_or(LoadgenError::Proc { pid })
    };
    let own = std::process::id();
    let (daemon_before, own_before) = (usage(pid)?, usage(own)?);
    let (report, _) = load::run(&control, sim, &load_plan).await?;
    let webhooks = match sink {
        Some(sink) => Some(
            sink.wait(&tag, report.dispatch.dispatched, WEBHOOK_WAIT)
                .await,
        ),
        None => None,
    };
    let (daemon_after, own_after) = (usage(pid)?, usage(own)?);
    let run = RateRun::new(
        rate,
        &report,
        daemon_after - daemon_before,
        own_after - own_before,
        webhooks,
    );
    eprintln!(
        "{} at {rate} calls/s: {:.1}/s achieved, {} of {} completed, dispatch → INVITE p99 {:.1} ms, {:.3} ms daemon CPU per call{}",
        binary.label,
        run.achieved_rate,
        run.completed,
        run.planned,
        run.dispatch_to_invite_ms.p99,
        run.daemon_cpu_ms_per_call,
        if run.ok { "" } else { " — not ok" }
    );
    Ok(run)
}

/// Writes `cps.json`, `cps.md` and the plot `cps.png` to `results` (a plot that cannot be
/// drawn is reported, not fatal).
fn write(results: &Path, report: &CpsReport) -> Result<(), LoadgenError> {
    let json = serde_json::to_string_pretty(report).map_err(|e| LoadgenError::Io {
        what: "serialising the report".into(),
        source: e.into(),
    })?;
    let file = |name: &str| results.join(name);
    std::fs::write(file("cps.json"), json).map_err(LoadgenError::io(format!(
        "writing {}",
        file("cps.json").display()
    )))?;
    std::fs::write(file("cps.md"), report.markdown()).map_err(LoadgenError::io(format!(
        "writing {}",
        file("cps.md").display()
    )))?;
    let series: Vec<(&str, Vec<(f64, Percentiles)>)> = report
        .binaries
        .iter()
        .map(|b| {
            (
                b.label.as_str(),
                b.runs
                    .iter()
                    .map(|r| (r.achieved_rate, r.dispatch_to_invite_ms))
                    .collect(),
            )
        })
        .collect();
    let png = file("cps.png");
    match crate::plot::setup_latency(&png, &series, report.sipp_ceiling) {
        Ok(()) => eprintln!("plot: {}", png.display()),
        Err(error) => eprintln!("plot not written: {error}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(calls: u64) -> Dispatch {
        Dispatch {
            dispatched: calls,
            statuses: [("completed".to_owned(), calls)].into(),
            dispatch_to_invite_ms: Percentiles {
                p50: 2.0,
                p99: 9.0,
                max: 12.0,
                count: calls as usize,
            },
            ..Dispatch::default()
        }
    }

    fn run_at(rate: u64, dispatch: Dispatch) -> RateRun {
        let mut report = Report::default();
        report.planned = dispatch.dispatched + dispatch.errors.values().sum::<u64>();
        report.achieved_rate = rate as f64;
        report.dispatch = dispatch;
        RateRun::new(rate, &report, 0.5, 0.25, None)
    }

    #[test]
    fn a_clean_run_is_ok_until_its_setup_p99_is_over_budget() {
        assert!(failures(100, &completed(100), None).is_empty());
        assert!(setup_ok(&BTreeMap::new(), SETUP_P99_BUDGET_MS));
        assert!(!setup_ok(&BTreeMap::new(), SETUP_P99_BUDGET_MS + 0.1));
        assert!(!setup_ok(&[("media error".to_owned(), 1)].into(), 1.0));
        let run = run_at(100, completed(100));
        assert!(run.ok);
        assert_eq!(run.daemon_cpu_ms_per_call, 5.0);
        assert_eq!(run.loadgen_cpu_ms_per_call, 2.5);
    }

    #[test]
    fn every_kind_of_failure_is_counted_by_cause() {
        let mut d = completed(95);
        d.errors = [("Unavailable".to_owned(), 3)].into();
        d.statuses = [("completed".to_owned(), 91), ("failed".to_owned(), 4)].into();
        d.failed_end_reasons = [("trunk_unreachable".to_owned(), 4)].into();
        d.end_reasons = [
            ("trunk_unreachable".to_owned(), 4),
            ("remote_bye".to_owned(), 90),
        ]
        .into();
        d.timeouts = 2;
        d.media_errors = 1;
        let webhooks = WebhookTally {
            missing: 6,
            unsigned: 1,
            ..WebhookTally::default()
        };
        let found = failures(100, &d, Some(&webhooks));
        let expected: BTreeMap<String, u64> = [
            ("gRPC Unavailable", 3),
            ("not dispatched by the deadline", 2),
            ("status failed", 4),
            ("end reason trunk_unreachable", 4),
            ("simulator timeout", 2),
            ("media error", 1),
            ("webhook_missing", 6),
            ("webhook_unsigned", 1),
        ]
        .into_iter()
        .map(|(c, n)| (c.to_owned(), n))
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn the_ceiling_is_the_first_rate_not_ok() {
        assert_eq!(ceiling([(250, true), (500, true), (1000, true)]), None);
        assert_eq!(
            ceiling([(250, true), (500, false), (1000, false)]),
            Some(500)
        );
        assert_eq!(ceiling([(250, false)]), Some(250));
        let mut runs = BinaryRuns::default();
        runs.runs.push(run_at(250, completed(250)));
        assert!(runs.going());
        let mut slow = completed(500);
        slow.dispatch_to_invite_ms.p99 = 150.0;
        runs.runs.push(run_at(500, slow));
        assert!(!runs.going());
    }

    #[test]
    fn the_lifecycle_leaves_out_the_media_measured_over_the_longer_hold() {
        let hold = Duration::from_millis(1000);
        let (mut short, mut long) = (RateRun::default(), RateRun::default());
        short.daemon_cpu_ms_per_call = 3.0;
        long.daemon_cpu_ms_per_call = 5.0;
        long.ok = true;
        let c = Calibration::new(250, hold, hold + CALIBRATION_EXTRA, &short, &long);
        // 2 ms more over 2 s more: 1 ms per call-second.
        assert!((c.media_ms_per_call_second - 1.0).abs() < 1e-9);
        assert_eq!((c.hold_ms, c.long_hold_ms), (1000, 3000));
        // 3 ms per call held 1 s: 2 ms of it is the lifecycle.
        assert!((c.lifecycle_ms(3.0, hold) - 2.0).abs() < 1e-9);
        assert!((c.lifecycle_ms(4.5, Duration::from_millis(500)) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn sipp_keeps_up_within_a_tenth_over_what_its_calls_need() {
        let figures = |elapsed_seconds, all_succeeded| SippFigures {
            elapsed_seconds,
            all_succeeded,
            ..SippFigures::default()
        };
        let hold = Duration::from_secs(1);
        // 500 calls at 100/s, held 1 s: 6 s.
        let on_time = SippRun::new(100, 500, hold, figures(6.5, true));
        assert!((on_time.expected_seconds - 6.0).abs() < 1e-9);
        assert!(on_time.ok);
        assert!(!SippRun::new(100, 500, hold, figures(6.7, true)).ok);
        assert!(!SippRun::new(100, 500, hold, figures(6.0, false)).ok);
    }

    #[test]
    fn the_markdown_has_a_row_per_rate_and_the_ceilings() {
        let mut slow = completed(1000);
        slow.dispatch_to_invite_ms.p99 = 250.0;
        slow.errors = [("ResourceExhausted".to_owned(), 7)].into();
        let mut current = BinaryRuns {
            label: "current".into(),
            binary: "dialtoned".into(),
            runs: vec![run_at(250, completed(250)), run_at(1000, slow)],
            ..BinaryRuns::default()
        };
        current.ceiling = ceiling(current.runs.iter().map(|r| (r.rate, r.ok)));
        current.runs[0].webhooks = Some(WebhookTally {
            received: 1250,
            calls: 250,
            calls_ended: 250,
            events_per_call: [(5, 250)].into(),
            ..WebhookTally::default()
        });
        let report = CpsReport {
            seconds: 1,
            hold_ms: 1000,
            binaries: vec![current],
            sipp: vec![SippRun::new(
                250,
                250,
                Duration::from_secs(1),
                SippFigures {
                    elapsed_seconds: 2.05,
                    all_succeeded: true,
                    cpu_ms_per_call: 0.4,
                    cpu_seconds: 0.1,
                },
            )],
            ..CpsReport::default()
        };
        let md = report.markdown();
        assert!(md.contains("**ceiling: 1000 calls/s"), "{md}");
        assert!(
            md.contains("| 250 | 250.0 | 250 / 0 | 2.0 / 9.0 / 12.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1000 | 1000.0 | 1000 / 7 | 2.0 / 250.0 / 12.0 |"),
            "{md}"
        );
        assert!(md.contains("gRPC ResourceExhausted: 7"), "{md}");
        assert!(
            md.contains("| 1250 (per call: 5 × 250; 0 calls missing) | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| 250 | 250 | 2.05 (2.00) | 0.400 | yes | yes |"),
            "{md}"
        );
        assert!(md.contains("not reached up to 250 calls/s"), "{md}");
    }
}
