//! # dialtone-loadgen — the trunk simulator and load driver behind the capacity bench
//!
//! * [`callee`]: a sans-IO SIP trunk simulator for many calls at once (answer, busy, failure
//!   and ring-no-answer mixes; answer delay; hold time or wait for the caller's BYE).
//! * [`voice`]: each call's audio, sans-IO: speech-like talkspurts sent on a 20 ms clock, and a
//!   meter of what comes back (packets, jitter, gaps beyond the clock, late packets, voiced
//!   audio, talkspurts answered — what an echoing agent does).
//! * [`sim`]: the driver: one UDP socket for SIP (tokio), one per call for RTP, streamed by
//!   a few OS threads ([`streams`]) that meter arrivals by the kernel's receive timestamps.
//! * [`load`]: dispatches calls through Dialtone's gRPC API at a rate, up to a concurrency,
//!   and gathers what the simulator and Dialtone saw into a [`report::Report`].
//! * [`reference`]: a bare UDP reflector driven by the same streams, the bench's physical
//!   reference.
//! * [`plot`]: PNG plots of a bench (calls live and CPU over time; latency percentiles; call
//!   setup latency against the rate).
//! * [`daemon`]: a `dialtoned` of the bench's own on loopback, ready when it answers.
//! * [`sipp`]: the SIPp reference, its UAC against its UAS at a rate and hold.
//! * [`cps`]: the call setup bench: rising call rates until setup fails or slows, CPU per call
//!   with the media's share measured apart, against an earlier build and SIPp.
//! * [`webhook_sink`]: a webhook receiver on loopback counting each call's deliveries.
//! * [`stalls`]: a real-time watch thread pinned to each CPU, so a report tells the machine's
//!   stalls (a vCPU the hypervisor stopped) from Dialtone's own.
//! * [`scripted`]: a zero-latency OpenAI-compatible responder on loopback, the scripted peer
//!   standing in for a `builtin:agent`'s model, speech recognition and synthesis.
//! * [`echo_app`]: a Twilio Media Streams app on loopback echoing as `builtin:echo` does, the
//!   brain of a `--brain media-streams` bench.
//!
//! The binary `dialtone-loadgen` runs the simulator alone (`callee`), a load against a daemon
//! (`run`), the capacity bench (`bench`: a `dialtoned` it starts, with `builtin:echo`,
//! with `--brain builtin:agent` against the scripted responder, or with `--brain media-streams`
//! against the Media Streams echo app), or the call setup bench (`cps`).

pub mod callee;
pub mod cps;
pub mod daemon;
pub mod echo_app;
pub mod load;
pub mod plot;
pub mod reference;
pub mod report;
pub mod scripted;
pub mod sim;
pub mod sipp;
pub mod stalls;
pub mod streams;
pub mod voice;
pub mod webhook_sink;

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// A socket could not be bound or used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The codec failed.
    #[error(transparent)]
    Codec(#[from] dialtone_codec::CodecError),
    /// An RTP packet could not be written.
    #[error(transparent)]
    Rtp(#[from] dialtone_rtp::RtpError),
    /// The daemon could not be reached or refused a request.
    #[error("gRPC {call}: {status}")]
    Grpc {
        /// The call made.
        call: &'static str,
        /// The daemon's answer.
        status: Box<tonic::Status>,
    },
    /// A plot could not be drawn or written.
    #[error("cannot plot {file}: {reason}")]
    Plot {
        /// The PNG file.
        file: std::path::PathBuf,
        /// What the plotting library said.
        reason: String,
    },
    /// A WAV file the callee should play is not one it can read.
    #[error("{file}: {reason}")]
    Wav {
        /// The file.
        file: std::path::PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No font to label plots with (fontconfig's `fc-match` found none).
    #[error("no sans-serif font for the plots (install fontconfig and fonts-dejavu-core)")]
    NoFont,
    /// A daemon the bench started did not answer `/readyz` in time.
    #[error("{} did not become ready", binary.display())]
    DaemonNotReady {
        /// The binary.
        binary: std::path::PathBuf,
    },
    /// A process's CPU could not be read from `/proc`.
    #[error("cannot read /proc/{pid}")]
    Proc {
        /// The process.
        pid: u32,
    },
    /// The gRPC endpoint is unusable.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

impl LoadgenError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadgenError {
        let what = what.into();
        move |source| LoadgenError::Io { what, source }
    }
}

/// A percentile (0–100) of `values` (sorted here), or 0 for none.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values
        .get(rank.min(values.len() - 1))
        .copied()
        .unwrap_or_default()
}

/// CPU seconds (user + system) and resident KiB of process `pid`, from `/proc`;
/// `ticks_per_second` is [`clock_ticks`].
pub fn process_usage(pid: u32, ticks_per_second: f64) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(((utime + stime) / ticks_per_second, rss))
}

/// CPU seconds the hypervisor has stolen from this machine since boot, all CPUs (`steal` in
/// `/proc/stat`); 0 where the kernel does not say.
pub fn host_steal_seconds(ticks_per_second: f64) -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().find(|l| l.starts_with("cpu "))?;
            line.split_whitespace().nth(8)?.parse::<f64>().ok()
        })
        .map_or(0.0, |ticks| ticks / ticks_per_second)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 when it cannot say).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
