//! `dialtone-loadgen`: the trunk simulator, a load driver, the capacity bench and the call setup
//! bench.
//!
//! * `callee`: the simulator alone, answering on `--sip` until Ctrl-C;
//! * `run`: the simulator plus a load against a running daemon (`--server`, `--api-key`): it
//!   creates a trunk pointing at the simulator, a number and an agent (`--brain`), then
//!   dispatches;
//! * `bench`: starts a `dialtoned` of its own (`builtin:echo`, SQLite, loopback), runs the load
//!   at each step of `--ramp` until one is not within budget, measures the daemon's CPU and
//!   memory and reads its media latency histograms; then runs the two references at the largest
//!   step within budget (a bare UDP reflector moving the same streams, SIPp's UAC against its
//!   UAS at the same rate and hold) and divides by them; writes `summary.json`, `summary.md`
//!   and each step's per-call records (`calls-<step>.json`) to `--results`. With `--brain
//!   builtin:agent` the calls run the conversation inside the engine, its model, speech
//!   recognition and synthesis a zero-latency scripted responder in this process
//!   (`dialtone_loadgen::scripted`), and the report times each turn and barge-in on the wire;
//! * `cps`: the call setup bench (`dialtone_loadgen::cps`): each of `--rates` for `--seconds`,
//!   calls held `--hold-ms` with media and `builtin:echo`, on a `dialtoned` of its own per run,
//!   until a rate's setup fails or its dispatch → INVITE p99 exceeds 100 ms; the media's CPU
//!   is measured apart at the first rate; with `--before` an earlier build runs each rate
//!   too, alternately; `--webhooks` counts each call's webhooks, `--sipp` runs SIPp's
//!   UAC against its UAS at each rate; writes `cps.json`, `cps.md` and `cps.png` to
//!   `--results`;
//! * `reflector`: the bare UDP reflector alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dialtone_loadgen::callee::{CalleeConfig, OutcomeMix};
use dialtone_loadgen::cps;
use dialtone_loadgen::daemon::{BENCH_KEY, Daemon, DaemonSpec, http_get};
use dialtone_loadgen::load::{self, Control, LoadPlan};
use dialtone_loadgen::plot::{self, TimelineSample};
use dialtone_loadgen::report::{
    DaemonUsage, MachineStall, Percentiles, describe_stalls, first_trouble, most_held_within_budget,
};
use dialtone_loadgen::scripted::ScriptedProvider;
use dialtone_loadgen::sim::Simulator;
use dialtone_loadgen::sipp;
use dialtone_loadgen::stalls::{StallWatch, freezes};
use dialtone_loadgen::voice::VoiceScript;
use dialtone_loadgen::{clock_ticks, host_steal_seconds, process_usage};
use dialtone_sdp::AudioCodec;
use dialtone_sip_core::TimerConfig;

/// Trunk simulator, load driver and capacity bench for Dialtone.
#[derive(Debug, Parser)]
#[command(name = "dialtone-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Runs the trunk simulator alone until Ctrl-C.
    Callee {
        #[command(flatten)]
        sim: SimArgs,
        #[command(flatten)]
        timing: Timing,
    },
    /// Runs a load against a running daemon.
    Run {
        /// The daemon's gRPC endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        server: String,
        /// API key.
        #[arg(long, env = "DIALTONE_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The brain of the agent the load creates (`builtin:agent` runs against a scripted
        /// responder in this process, which the daemon must be allowed to reach on 127.0.0.1:
        /// DIALTONE_PRIVATE_DESTINATIONS=127.0.0.1).
        #[arg(long, default_value = "builtin:echo")]
        brain: String,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        sim: SimArgs,
        #[command(flatten)]
        timing: Timing,
    },
    /// A bare UDP reflector (the bench's physical reference), until killed.
    Reflector {
        /// Address of the sockets.
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
        /// The first port (then every second one).
        #[arg(long, default_value_t = 14000)]
        first_port: u16,
        /// How many sockets.
        #[arg(long, default_value_t = 100)]
        count: u16,
    },
    /// Watches the machine's CPUs (one real-time thread pinned to each) with nothing else of
    /// ours running, and reports their stalls and the freezes of the whole machine: how quiet
    /// the host is before it carries calls.
    Watch {
        /// How long to watch.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// The capacity bench: a dialtoned of its own, ramped until a step is out of budget.
    Bench {
        /// Concurrency steps; each runs that many calls, all held at once.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100,250,500,750,1000,1250"
        )]
        ramp: Vec<u64>,
        /// The dialtoned binary (default: next to this one).
        #[arg(long)]
        dialtoned: Option<PathBuf>,
        /// Media worker threads of the daemon (0: one per core).
        #[arg(long, default_value_t = 0)]
        media_workers: usize,
        /// One linear ramp instead of steps: calls dispatched at --rate up to the last --ramp
        /// value, each held until the top plus --hold-seconds; reports how many calls were
        /// live when the first trouble (a gap, an unanswered talkspurt, a call not set up)
        /// came.
        #[arg(long)]
        linear: bool,
        /// Where summary.json and summary.md go.
        #[arg(long, default_value = "target/capacity")]
        results: PathBuf,
        /// The brain of the calls: builtin:echo, builtin:agent against a zero-latency
        /// scripted OpenAI-compatible responder in this process, or media-streams: a Media
        /// Streams echo app in this process, over a websocket per call.
        #[arg(long, value_enum, default_value = "builtin:echo")]
        brain: BenchBrain,
        /// The daemon's database (default: SQLite in its own directory); a `postgres://` URL
        /// runs it as a node of a cluster, counting its caps in the database.
        #[arg(long)]
        database_url: Option<String>,
        /// An organisation cap on concurrent calls (`DIALTONE_ORG_MAX_CONCURRENT_CALLS`): every
        /// call then takes a slot, held in the database on PostgreSQL.
        #[arg(long)]
        org_cap: Option<u32>,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        sim: SimArgs,
        #[command(flatten)]
        timing: Timing,
    },
    /// The call setup bench: rising call rates, each on a dialtoned of its own, until call
    /// setup fails or slows; CPU per call with the media's share measured apart.
    Cps {
        /// Calls per second, each run for --seconds (ascending).
        #[arg(long, value_delimiter = ',', default_value = "250,500,1000,1500,2000")]
        rates: Vec<u64>,
        /// Seconds of dispatching at each rate.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// How long the simulator holds each call before its BYE, ms.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        hold_ms: u64,
        /// From INVITE to 200, ms.
        #[arg(long, default_value_t = 0)]
        answer_delay_ms: u64,
        /// Another dialtoned (an earlier build) to run at each rate too, alternately with this
        /// one.
        #[arg(long)]
        before: Option<PathBuf>,
        /// Every call names a webhook receiver of the load generator's, which counts each
        /// call's deliveries; a call whose final webhook never comes is a failure.
        #[arg(long)]
        webhooks: bool,
        /// Runs SIPp's UAC against its UAS at each rate too.
        #[arg(long)]
        sipp: bool,
        /// Where cps.json, cps.md and cps.png go.
        #[arg(long, default_value = "target/cps")]
        results: PathBuf,
        /// The dialtoned binary (default: next to this one).
        #[arg(long)]
        dialtoned: Option<PathBuf>,
        /// Media worker threads of the daemons (0: one per core).
        #[arg(long, default_value_t = 0)]
        media_workers: usize,
        /// Destination number.
        #[arg(long, default_value = "+15551230000")]
        to: String,
        #[command(flatten)]
        sim: SimArgs,
    },
}

/// The brains the bench can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchBrain {
    #[value(name = "builtin:echo")]
    Echo,
    #[value(name = "builtin:agent")]
    Agent,
    /// A Twilio Media Streams app in this process (`dialtone_loadgen::echo_app`), echoing
    /// as `builtin:echo` does, over a websocket per call.
    #[value(name = "media-streams")]
    MediaStreams,
}

impl BenchBrain {
    fn name(self) -> &'static str {
        match self {
            Self::Echo => "builtin:echo",
            Self::Agent => load::BUILTIN_AGENT,
            Self::MediaStreams => "media-streams",
        }
    }
}

/// The name of the provider the load's `builtin:agent` calls use.
const SCRIPTED_PROVIDER: &str = "scripted";

/// For a `builtin:agent` load: the scripted responder, and an `openai` provider pointing at it.
async fn scripted_provider(
    control: &Control,
    brain: &str,
) -> anyhow::Result<Option<ScriptedProvider>> {
    if brain != load::BUILTIN_AGENT {
        return Ok(None);
    }
    let scripted = ScriptedProvider::start().await?;
    control
        .create_openai_provider(SCRIPTED_PROVIDER, &scripted.base_url())
        .await?;
    Ok(Some(scripted))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    Pcmu,
    Pcma,
    Opus,
}

#[derive(Debug, Clone, Args)]
struct SimArgs {
    /// The simulator's SIP address (UDP).
    #[arg(long, default_value = "127.0.0.1:0")]
    sip: SocketAddr,
    /// RTP ports of the simulator (below the kernel's ephemeral range, which starts at 32768).
    #[arg(long, default_value = "10000-19999", value_parser = port_range)]
    rtp_ports: (u16, u16),
    /// The codec the simulator answers with.
    #[arg(long, value_enum, default_value = "pcmu")]
    codec: CodecArg,
    /// Outcome mix in parts: answer,busy,fail,no-answer.
    #[arg(long, default_value = "1,0,0,0", value_parser = mix)]
    mix: OutcomeMix,
    /// A 16-bit PCM WAV (8, 16 or 48 kHz) the callees' talkspurts come from (default: a
    /// generated voice).
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Digits each callee presses as RFC 4733 events in its first pause.
    #[arg(long, default_value = "")]
    digits: String,
    /// Threads streaming the callees' RTP (each wakes every 2 ms for all of its calls).
    #[arg(long, default_value_t = 1)]
    stream_threads: usize,
}

/// When the simulator answers and hangs up (the `cps` mode has its own, in ms).
#[derive(Debug, Clone, Copy, Args)]
struct Timing {
    /// From INVITE to 200, ms.
    #[arg(long, default_value_t = 200)]
    answer_delay_ms: u64,
    /// Seconds the simulator holds an answered call before its BYE (0: wait for ours).
    #[arg(long, default_value_t = 20)]
    hold_seconds: u64,
}

impl Timing {
    fn answer_delay(self) -> Duration {
        Duration::from_millis(self.answer_delay_ms)
    }

    fn hold(self) -> Option<Duration> {
        (self.hold_seconds > 0).then(|| Duration::from_secs(self.hold_seconds))
    }
}

fn voice_script(sim: &SimArgs) -> anyhow::Result<VoiceScript> {
    let source = match &sim.wav {
        Some(file) => Some(Arc::from(dialtone_loadgen::voice::read_wav(file)?)),
        None => None,
    };
    if let Some(bad) = sim
        .digits
        .chars()
        .find(|d| dialtone_rtp::dtmf::code_of(*d).is_none())
    {
        bail!("--digits: {bad:?} is not a DTMF digit (0-9, *, #, A-D)");
    }
    Ok(VoiceScript {
        source,
        digits: sim.digits.clone(),
    })
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Calls to dispatch (run) — the bench uses each ramp step instead.
    #[arg(long, default_value_t = 100)]
    calls: u64,
    /// Dispatches per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Most calls live at once (run).
    #[arg(long, default_value_t = 100)]
    concurrency: u64,
    /// Destination number.
    #[arg(long, default_value = "+15551230000")]
    to: String,
}

fn port_range(text: &str) -> Result<(u16, u16), String> {
    text.split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .filter(|(a, b): &(u16, u16)| a < b)
        .ok_or_else(|| format!("{text:?} is not a range like 10000-19999"))
}

fn mix(text: &str) -> Result<OutcomeMix, String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    match parts.as_slice() {
        [answer, busy, fail, no_answer] if answer + busy + fail + no_answer > 0 => Ok(OutcomeMix {
            answer: *answer,
            busy: *busy,
            fail: *fail,
            no_answer: *no_answer,
        }),
        _ => Err(format!("{text:?} is not four parts like 8,1,1,0")),
    }
}

async fn start_simulator(sim: &SimArgs, timing: Timing) -> anyhow::Result<Simulator> {
    Ok(Simulator::start(
        callee_config(sim, timing.answer_delay(), timing.hold()),
        sim.rtp_ports,
        voice_script(sim)?,
        sim.stream_threads,
    )
    .await?)
}

fn callee_config(sim: &SimArgs, answer_delay: Duration, hold: Option<Duration>) -> CalleeConfig {
    CalleeConfig {
        sip_addr: sim.sip,
        media_ip: sim.sip.ip(),
        codecs: vec![match sim.codec {
            CodecArg::Pcmu => AudioCodec::Pcmu,
            CodecArg::Pcma => AudioCodec::Pcma,
            CodecArg::Opus => AudioCodec::Opus,
        }],
        mix: sim.mix,
        answer_delay,
        hold,
        timers: TimerConfig::default(),
    }
}

/// `dialtone-loadgen watch`: the stalls and freezes of the machine over `period`.
fn watch_machine(period: Duration) -> anyhow::Result<()> {
    let ticks = clock_ticks();
    let steal_before = host_steal_seconds(ticks);
    let watch = StallWatch::start()?;
    if !watch.realtime() {
        eprintln!(
            "the stall watch runs without real-time scheduling or pinning: the machine's other \
             threads delay it too, and it reports that as stalls"
        );
    }
    let (cpus, started) = (watch.cpus(), Instant::now());
    std::thread::sleep(period);
    let stalls = watch.finish();
    let frozen = freezes(&stalls, cpus);
    let at = |t: Instant| t.saturating_duration_since(started).as_secs_f64();
    for s in &stalls {
        println!(
            "stall: CPU {} from {:.3} s, {:.1} ms",
            s.cpu,
            at(s.from),
            s.late.as_secs_f64() * 1000.0
        );
    }
    for f in &frozen {
        println!(
            "freeze of every CPU: from {:.3} s, {:.1} ms",
            at(f.from),
            f.length().as_secs_f64() * 1000.0
        );
    }
    println!(
        "{} CPUs watched for {} s: {} stalls over {} ms, {} freezes of the whole machine, {:.2} s \
         stolen by the hypervisor",
        cpus,
        period.as_secs(),
        stalls.len(),
        dialtone_loadgen::stalls::STALL.as_millis(),
        frozen.len(),
        host_steal_seconds(ticks) - steal_before
    );
    Ok(())
}

fn plan(agent_id: String, load: &LoadArgs, calls: u64, concurrency: u64, hold: u64) -> LoadPlan {
    let dispatch = calls as f64 / load.rate.max(0.001);
    LoadPlan {
        agent_id,
        to: load.to.clone(),
        calls,
        rate: load.rate,
        max_concurrency: concurrency,
        deadline: Duration::from_secs_f64(dispatch + hold as f64 * 2.0 + 60.0),
        progress: true,
        watch_cpu: None,
        webhook_url: None,
    }
}

/// The value of Prometheus counter `name` (no labels) in `text`; 0 when absent.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Percentiles (upper bucket bounds, ms) of Prometheus histogram `name` in `text`.
fn histogram(text: &str, name: &str) -> Percentiles {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((
                le.parse::<f64>().unwrap_or(f64::INFINITY),
                count.trim().parse().ok()?,
            ))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let at = |p: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= p * total)
            .map_or(0.0, |(le, _)| le * 1000.0)
    };
    let max = buckets
        .windows(2)
        .filter(|w| w.get(1).map(|b| b.1) > w.first().map(|a| a.1))
        .filter_map(|w| w.get(1).map(|b| b.0 * 1000.0))
        .fold(
            buckets
                .first()
                .filter(|b| b.1 > 0.0)
                .map_or(0.0, |b| b.0 * 1000.0),
            f64::max,
        );
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        max,
        count: total as usize,
    }
}

/// How the bench loads the daemon.
#[derive(Debug)]
enum Shape {
    /// Each step holds that many calls at once, until a step is out of budget.
    Steps(Vec<u64>),
    /// One ramp at the dispatch rate up to this many calls.
    Linear(u64),
}

/// What the bench runs.
struct BenchTarget {
    daemon: DaemonSpec,
    brain: BenchBrain,
}

async fn bench(
    shape: &Shape,
    target: BenchTarget,
    results: &Path,
    load_args: &LoadArgs,
    (sim_args, timing): (&SimArgs, Timing),
) -> anyhow::Result<()> {
    let (ramp, timing) = match shape {
        Shape::Steps(ramp) => (ramp.clone(), timing),
        Shape::Linear(top) => {
            // Every call stays up until the ramp reaches the top, and a while after.
            let climb = (*top as f64 / load_args.rate.max(0.001)).ceil() as u64;
            let held = Timing {
                hold_seconds: climb + timing.hold_seconds.max(1),
                ..timing
            };
            (vec![*top], held)
        }
    };
    let ramp = ramp.as_slice();
    let mut linear_trouble = None;
    let mut rss_before_calls: Option<u64> = None;
    let daemon = Daemon::start(&target.daemon)?;
    let pid = daemon.pid();
    let ticks = clock_ticks();
    let control = Control::connect(&daemon.endpoint(), BENCH_KEY).await?;
    let brain = target.brain.name();
    let scripted = scripted_provider(&control, brain).await?;
    let echo_app = match target.brain {
        BenchBrain::MediaStreams => Some(dialtone_loadgen::echo_app::EchoApp::start().await?),
        _ => None,
    };
    // The agent's brain: the app's websocket URL for a media-streams bench.
    let agent_brain = echo_app
        .as_ref()
        .map_or(brain, dialtone_loadgen::echo_app::EchoApp::url);
    std::fs::create_dir_all(results)?;
    let mut steps = Vec::new();
    for &concurrency in ramp {
        eprintln!("== {concurrency} concurrent calls ==");
        let sim = start_simulator(sim_args, timing).await?;
        let agent = control
            .set_up_agent(
                sim.sip_addr,
                agent_brain,
                scripted.as_ref().map(|_| SCRIPTED_PROVIDER),
            )
            .await?;
        let requests_before = scripted.as_ref().map(ScriptedProvider::requests);
        let (cpu_before, rss_now) =
            process_usage(pid, ticks).context("reading /proc of dialtoned")?;
        // Memory per call counts from the daemon before its first call: the allocator keeps
        // what an earlier step freed.
        let rss_idle = *rss_before_calls.get_or_insert(rss_now);
        let (own_before, _) =
            process_usage(std::process::id(), ticks).context("reading /proc/self")?;
        let steal_before = host_steal_seconds(ticks);
        // Sample the daemon's CPU and memory, and the calls live, while the load runs.
        let peak = Arc::new(AtomicU64::new(rss_now));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, sampling, watch) = (peak.clone(), sampling.clone(), sim.watch());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut timeline = Vec::new();
                let mut last_cpu = cpu_before;
                while sampling.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    if let Some((cpu, rss)) = process_usage(pid, ticks) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                        timeline.push(TimelineSample {
                            t_s: started.elapsed().as_secs_f64(),
                            live_calls: watch.counts().live,
                            daemon_cpu_percent: (cpu - last_cpu) * 100.0 / 0.5,
                            daemon_rss_kib: rss,
                        });
                        last_cpu = cpu;
                    }
                }
                timeline
            })
        };
        let mut p = plan(
            agent,
            load_args,
            concurrency,
            concurrency,
            timing.hold_seconds,
        );
        p.watch_cpu = Some((pid, ticks));
        let stalls = StallWatch::start()?;
        if !stalls.realtime() {
            eprintln!(
                "the stall watch runs without real-time scheduling or pinning: a busy machine's \
                 threads delay it too, and it reports that as stalls"
            );
        }
        let cpus = stalls.cpus();
        let (mut report, records) = load::run(&control, sim, &p).await?;
        let stalls = stalls.finish();
        let freezes = freezes(&stalls, cpus);
        report.note_machine_stalls(&stalls, &freezes, &records);
        sampling.store(false, Ordering::Relaxed);
        let timeline = sampler.join().unwrap_or_default();
        let (cpu_after, _) = process_usage(pid, ticks).context("reading /proc of dialtoned")?;
        let (own_after, _) =
            process_usage(std::process::id(), ticks).context("reading /proc/self")?;
        let metrics = http_get(daemon.http, "/metrics").unwrap_or_default();
        std::fs::write(
            results.join(format!("calls-{concurrency}.json")),
            serde_json::to_string_pretty(&records)?,
        )?;
        let call_seconds: f64 = records.iter().map(|r| r.held_ms as f64 / 1000.0).sum();
        let rss_peak = peak.load(Ordering::Relaxed);
        let cpu_seconds = cpu_after - cpu_before;
        // The daemon's histograms count from its start: each step's figures include the
        // smaller steps before it.
        report.daemon = Some(DaemonUsage {
            cpu_seconds,
            call_seconds,
            cpu_ms_per_call_second: cpu_seconds * 1000.0 / call_seconds.max(0.001),
            rss_idle_kib: rss_idle,
            rss_peak_kib: rss_peak,
            kib_per_call: rss_peak.saturating_sub(rss_idle) as f64
                / report.dispatch.max_concurrent.max(1) as f64,
            inbound_ms: histogram(&metrics, "dialtone_media_inbound_latency_seconds"),
            outbound_ms: histogram(&metrics, "dialtone_media_outbound_latency_seconds"),
            step_ms: histogram(&metrics, "dialtone_media_step_seconds"),
            tick_lateness_ms: histogram(&metrics, "dialtone_media_tick_lateness_seconds"),
            barge_in_stop_ms: histogram(&metrics, "dialtone_barge_in_stop_seconds"),
            streams_inbound_ms: histogram(&metrics, "dialtone_media_streams_inbound_seconds"),
            streams_outbound_ms: histogram(&metrics, "dialtone_media_streams_outbound_seconds"),
            ticks_skipped: counter(&metrics, "dialtone_media_ticks_skipped_total"),
            steps_stood_in: counter(&metrics, "dialtone_media_steps_stood_in_total"),
            speech_ring_overflows: counter(&metrics, "dialtone_inbound_ring_overflows_total"),
            loadgen_cpu_seconds: own_after - own_before,
            host_steal_seconds: host_steal_seconds(ticks) - steal_before,
        });
        report.judge();
        println!(
            "\n### {concurrency} concurrent calls ({brain})\n\n{}",
            report.markdown()
        );
        print_turns(&report, requests_before, scripted.as_ref());
        if let Some(app) = &echo_app {
            let counts = app.counts();
            println!(
                "media streams app: {} streams, {} media events in, {} utterances echoed",
                counts.streams.load(std::sync::atomic::Ordering::Relaxed),
                counts.media_in.load(std::sync::atomic::Ordering::Relaxed),
                counts.echoed.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        if matches!(shape, Shape::Linear(_)) {
            let trouble = first_trouble(&records, &[]);
            let apart = first_trouble(&records, &freezes);
            for (what, t) in [
                ("", &trouble),
                (", leaving out freezes of the machine", &apart),
            ] {
                match t {
                    Some(t) => println!(
                        "linear ramp{what}: first trouble at {:.1} s with {} calls live: {}",
                        t.at_s, t.live_calls, t.what
                    ),
                    None => println!(
                        "linear ramp{what}: no trouble up to {} calls live",
                        report.dispatch.max_concurrent
                    ),
                }
            }
            linear_trouble = Some((trouble, apart));
        }
        // A step the machine's freezes alone kept out of budget does not end the ramp.
        let go_on = report.within_budget_apart_from_freezes();
        steps.push((concurrency, report, timeline));
        if !go_on {
            break;
        }
    }
    let held = most_held_within_budget(
        steps.iter().map(|(_, r, _)| r),
        linear_trouble.as_ref().map(|(strict, _)| strict.as_ref()),
        false,
    );
    let held_apart_from_freezes = most_held_within_budget(
        steps.iter().map(|(_, r, _)| r),
        linear_trouble.as_ref().map(|(_, apart)| apart.as_ref()),
        true,
    );
    // The references, at the largest step within budget leaving out the machine's freezes
    // (or the first step).
    let reference_calls = held_apart_from_freezes
        .or(held)
        .or_else(|| ramp.first().copied())
        .unwrap_or(100);
    // Per call-second, so the linear ramp's one run compares too.
    let daemon_step = steps
        .iter()
        .find(|(_, r, _)| r.held() == reference_calls)
        .or_else(|| steps.last())
        .and_then(|(_, r, _)| r.daemon.clone());
    eprintln!("== references at {reference_calls} calls ==");
    let reflector = reflector_reference(
        reference_calls,
        timing.hold_seconds,
        sim_args.stream_threads,
        ticks,
    )
    .await?;
    let sipp = sipp::reference(
        reference_calls,
        load_args.rate,
        Duration::from_secs(timing.hold_seconds),
        ticks,
    )?;
    let ratios = daemon_step.map(|d| {
        serde_json::json!({
            "daemon_cpu_per_call_second_over_reflector": d.cpu_ms_per_call_second / reflector.cpu_ms_per_call_second.max(1e-9),
            "daemon_cpu_per_call_over_sipp_pair": (d.cpu_seconds * 1000.0 / reference_calls as f64) / sipp.cpu_ms_per_call.max(1e-9),
        })
    });
    let references = serde_json::json!({
        "calls": reference_calls,
        "udp_reflector": reflector,
        "sipp_uac_to_uas": sipp,
        "ratios": ratios,
    });
    let summary = serde_json::json!({
        "references": references,
        "codec": format!("{:?}", sim_args.codec).to_lowercase(),
        "brain": brain,
        "rate": load_args.rate,
        "hold_seconds": timing.hold_seconds,
        "max_concurrent_within_budget": held,
        "max_concurrent_within_budget_apart_from_machine_freezes": held_apart_from_freezes,
        "linear_ramp_first_trouble": linear_trouble.as_ref().and_then(|(strict, _)| strict.clone()),
        "linear_ramp_first_trouble_apart_from_machine_freezes": linear_trouble.as_ref().and_then(|(_, apart)| apart.clone()),
        "steps": steps.iter().map(|(c, r, t)| serde_json::json!({"concurrency": c, "report": r, "timeline": t})).collect::<Vec<_>>(),
    });
    std::fs::write(
        results.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let count = |n: Option<u64>| n.map_or("none".into(), |h| h.to_string());
    let mut md = format!(
        "# Capacity bench\n\n{brain}, codec {:?}, {} dispatches/s, calls held {} s\n\n**most concurrent calls within budget: {}**\n\n\
         leaving out the gaps that freezes of the whole machine (every CPU stalled at once) explain: {}\n",
        sim_args.codec,
        load_args.rate,
        timing.hold_seconds,
        count(held),
        count(held_apart_from_freezes),
    );
    if let Some((strict, apart)) = &linear_trouble {
        for (what, t) in [
            ("", strict),
            (", leaving out freezes of the machine", apart),
        ] {
            md.push_str(&match t {
                Some(t) => format!(
                    "\nlinear ramp at {} calls/s{what}: first trouble {:.1} s in, with {} calls live ({})\n",
                    load_args.rate, t.at_s, t.live_calls, t.what
                ),
                None => format!("\nlinear ramp{what}: no trouble on the way up\n"),
            });
        }
    }
    for (c, r, _) in &steps {
        md.push_str(&format!("\n## {c} concurrent calls\n\n{}", r.markdown()));
    }
    md.push_str(&format!(
        "\n## References at {reference_calls} calls\n\n| reference | figure |\n|---|---|\n\
         | bare UDP reflector, the same packets | {:.3} ms CPU per call-second ({} streams with gaps > 30 ms; stalls of a CPU meanwhile: {}) |\n\
         | SIPp UAC → SIPp UAS, same rate and hold, no media | {:.3} ms CPU per call, both ends ({}) |\n\
         | ratios | {} |\n",
        reflector.cpu_ms_per_call_second,
        reflector.streams_with_gaps,
        describe_stalls(&reflector.machine_stalls),
        sipp.cpu_ms_per_call,
        if sipp.all_succeeded { "all calls succeeded" } else { "SIPp reported failed calls" },
        references.get("ratios").cloned().unwrap_or_default()
    ));
    std::fs::write(results.join("summary.md"), &md)?;
    let mut plots = Vec::new();
    for (c, _, timeline) in &steps {
        let file = results.join(format!("timeline-{c}.png"));
        let title = format!("{c} concurrent calls: calls live and daemon CPU");
        plots.push(plot::timeline(&file, &title, timeline).map(|()| file));
    }
    let file = results.join("latency.png");
    let reports: Vec<(u64, &dialtone_loadgen::report::Report)> =
        steps.iter().map(|(c, r, _)| (*c, r)).collect();
    plots.push(plot::latencies(&file, &reports).map(|()| file));
    for plot in plots {
        match plot {
            Ok(file) => eprintln!("plot: {}", file.display()),
            Err(error) => eprintln!("plot not written: {error}"),
        }
    }
    println!(
        "\nmost concurrent calls within budget: {}; {} and {} written",
        held.map_or("none".into(), |h| h.to_string()),
        results.join("summary.json").display(),
        results.join("summary.md").display()
    );
    Ok(())
}

/// The turns and barge-ins of a step on the wire, less what the daemon waits for by design:
/// the endpointing silence after a talkspurt, before it answers. With the scripted responder,
/// the requests it answered during the step.
fn print_turns(
    report: &dialtone_loadgen::report::Report,
    before: Option<dialtone_loadgen::scripted::ProviderRequests>,
    scripted: Option<&ScriptedProvider>,
) {
    let m = &report.media;
    let endpointing = load::ENDPOINTING.as_secs_f64() * 1000.0;
    if m.turn_ms.count > 0 {
        println!(
            "turns on the wire (talkspurt end → first voiced packet back), less the {endpointing:.0} ms \
             endpointing silence: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} turns",
            m.turn_ms.p50 - endpointing,
            m.turn_ms.p99 - endpointing,
            m.turn_ms.max - endpointing,
            m.turn_ms.count
        );
    }
    if m.barge_in_ms.count > 0 {
        println!(
            "barge-ins on the wire (talkspurt start over the agent → first silent packet back): \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} ({} not silenced)",
            m.barge_in_ms.p50,
            m.barge_in_ms.p99,
            m.barge_in_ms.max,
            m.barge_in_ms.count,
            m.barge_ins_missed
        );
    }
    let in_daemon = [
        (
            "barge-ins (the speech loop's decision → the media tick that dropped the agent's \
             queued audio)",
            report.daemon.as_ref().map(|d| &d.barge_in_stop_ms),
        ),
        (
            "Media Streams, caller → app (RTP packet received → its `media` written to the \
             websocket)",
            report.daemon.as_ref().map(|d| &d.streams_inbound_ms),
        ),
        (
            "Media Streams, app → caller (the app's `media` read → the media tick taking its \
             first frame)",
            report.daemon.as_ref().map(|d| &d.streams_outbound_ms),
        ),
    ];
    for (what, figures) in in_daemon {
        if let Some(f) = figures.filter(|f| f.count > 0) {
            println!(
                "in the daemon, {what}; bucket bounds, since the daemon started: p50 ≤ {:.0} ms, \
                 p99 ≤ {:.0} ms, max ≤ {:.0} ms over {}",
                f.p50, f.p99, f.max, f.count
            );
        }
    }
    if let (Some(before), Some(scripted)) = (before, scripted) {
        let now = scripted.requests();
        println!(
            "scripted provider: {} chat completions, {} transcriptions, {} syntheses",
            now.chat - before.chat,
            now.transcriptions - before.transcriptions,
            now.speech - before.speech
        );
    }
}

/// The bare UDP reflector's cost for `calls` streams held `hold_seconds`.
#[derive(Debug, serde::Serialize)]
struct ReflectorFigures {
    cpu_seconds: f64,
    cpu_ms_per_call_second: f64,
    streams_with_gaps: u64,
    /// Stalls of the machine's CPUs meanwhile, timed from the reflector's start ([`StallWatch`]).
    machine_stalls: Vec<MachineStall>,
}

async fn reflector_reference(
    calls: u64,
    hold_seconds: u64,
    stream_threads: usize,
    ticks: f64,
) -> anyhow::Result<ReflectorFigures> {
    use std::io::BufRead;
    let count = u16::try_from(calls).context("too many calls for the reflector")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "reflector",
            "--first-port",
            "14000",
            "--count",
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the reflector")?;
    let stdout = child.stdout.take().context("the reflector's output")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        bail!("the reflector did not start: {line:?}");
    }
    let pid = child.id();
    let (before, _) = process_usage(pid, ticks).context("reading /proc of the reflector")?;
    let targets: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 14000 + i * 2)))
        .collect();
    let hold = Duration::from_secs(hold_seconds.max(1));
    let (started, stalls) = (Instant::now(), StallWatch::start()?);
    let measures =
        dialtone_loadgen::reference::drive([127, 0, 0, 1].into(), &targets, hold, stream_threads)
            .await?;
    let machine_stalls = MachineStall::timed(started, &stalls.finish());
    let (after, _) = process_usage(pid, ticks).context("reading /proc of the reflector")?;
    let _ = child.kill();
    let _ = child.wait();
    let cpu_seconds = after - before;
    Ok(ReflectorFigures {
        cpu_seconds,
        cpu_ms_per_call_second: cpu_seconds * 1000.0 / (calls as f64 * hold.as_secs_f64()),
        streams_with_gaps: measures.iter().filter(|m| m.gaps > 0).count() as u64,
        machine_stalls,
    })
}

/// The dialtoned to run: `given`, or the one next to this binary; it must exist.
fn dialtoned_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let binary = match given {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("the loadgen's directory")?
            .join("dialtoned"),
    };
    if !binary.exists() {
        bail!(
            "{} is missing: cargo build --release -p dialtone-daemon",
            binary.display()
        );
    }
    Ok(binary)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Mode::Reflector {
            ip,
            first_port,
            count,
        } => {
            dialtone_loadgen::reference::reflect(ip, first_port, count)?;
            println!("ready");
            tokio::signal::ctrl_c().await?;
        }
        Mode::Watch { seconds } => watch_machine(Duration::from_secs(seconds))?,
        Mode::Callee { sim, timing } => {
            let simulator = start_simulator(&sim, timing).await?;
            eprintln!(
                "trunk simulator on udp {}; Ctrl-C stops it",
                simulator.sip_addr
            );
            tokio::signal::ctrl_c().await?;
            let records = simulator.stop().await;
            eprintln!("{} calls", records.len());
            println!("{}", serde_json::to_string_pretty(&records)?);
        }
        Mode::Run {
            server,
            api_key,
            brain,
            load: load_args,
            sim,
            timing,
        } => {
            let control = Control::connect(&server, &api_key).await?;
            let simulator = start_simulator(&sim, timing).await?;
            let scripted = scripted_provider(&control, &brain).await?;
            let agent = control
                .set_up_agent(
                    simulator.sip_addr,
                    &brain,
                    scripted.as_ref().map(|_| SCRIPTED_PROVIDER),
                )
                .await?;
            let p = plan(
                agent,
                &load_args,
                load_args.calls,
                load_args.concurrency,
                timing.hold_seconds,
            );
            let (report, _) = load::run(&control, simulator, &p).await?;
            println!("{}", report.markdown());
            print_turns(
                &report,
                scripted.as_ref().map(|_| Default::default()),
                scripted.as_ref(),
            );
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Mode::Bench {
            ramp,
            dialtoned,
            media_workers,
            linear,
            results,
            brain,
            database_url,
            org_cap,
            load: load_args,
            sim,
            timing,
        } => {
            let binary = dialtoned_binary(dialtoned)?;
            let shape = if linear {
                let top = ramp.iter().copied().max().unwrap_or(1000);
                Shape::Linear(top)
            } else {
                Shape::Steps(ramp)
            };
            let target = BenchTarget {
                daemon: DaemonSpec {
                    binary,
                    media_workers,
                    database_url,
                    org_cap,
                    // The scripted responder of a builtin:agent bench and the Media Streams
                    // app listen on 127.0.0.1.
                    allow_loopback: brain != BenchBrain::Echo,
                },
                brain,
            };
            bench(&shape, target, &results, &load_args, (&sim, timing)).await?;
        }
        Mode::Cps {
            rates,
            seconds,
            hold_ms,
            answer_delay_ms,
            before,
            webhooks,
            sipp,
            results,
            dialtoned,
            media_workers,
            to,
            sim,
        } => {
            let spec = |binary| DaemonSpec {
                binary,
                media_workers,
                database_url: None,
                org_cap: None,
                allow_loopback: false,
            };
            let mut binaries = Vec::new();
            if let Some(before) = before {
                if !before.exists() {
                    bail!("{} is missing", before.display());
                }
                binaries.push(cps::Binary {
                    label: "before".into(),
                    spec: spec(before),
                });
            }
            binaries.push(cps::Binary {
                label: "current".into(),
                spec: spec(dialtoned_binary(dialtoned)?),
            });
            let hold = Duration::from_millis(hold_ms);
            let plan = cps::CpsPlan {
                rates,
                seconds,
                hold,
                binaries,
                simulator: cps::SimulatorSpec {
                    callee: callee_config(&sim, Duration::from_millis(answer_delay_ms), Some(hold)),
                    rtp_ports: sim.rtp_ports,
                    script: voice_script(&sim)?,
                    stream_threads: sim.stream_threads,
                },
                to,
                webhooks,
                sipp,
                results: results.clone(),
            };
            let report = cps::run(&plan).await?;
            println!("{}", report.markdown());
            println!(
                "{} and {} written",
                results.join("cps.json").display(),
                results.join("cps.md").display()
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dialtone-loadgen: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_read_by_its_whole_name() {
        let metrics = "# TYPE dialtone_media_ticks_skipped_total counter\n\
                       dialtone_media_ticks_skipped_total_other 9\n\
                       dialtone_media_ticks_skipped_total 12\n";
        assert_eq!(counter(metrics, "dialtone_media_ticks_skipped_total"), 12);
        assert_eq!(counter(metrics, "dialtone_media_calls"), 0);
    }
}
