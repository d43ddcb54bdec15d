//! What a load run found: a JSON summary and a Markdown table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::load::LoadPlan;
use crate::percentile;
use crate::sim::CallRecord;
use crate::stalls::{Freeze, Stall};
use crate::voice::{CallMeasure, GAP};

/// Calls whose first gaps came within this long of a burst's first are one burst.
const BURST: Duration = Duration::from_millis(100);
/// Bursts and stalls listed in the Markdown table, the largest first.
const LISTED: usize = 5;

/// p50, p99 and the maximum of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Sample size.
    pub count: usize,
}

impl Percentiles {
    /// Of `values`.
    pub fn of(values: &mut [f64]) -> Self {
        Self {
            p50: percentile(values, 50.0),
            p99: percentile(values, 99.0),
            max: values.iter().copied().fold(0.0, f64::max),
            count: values.len(),
        }
    }
}

/// The dispatch side of a run, as the driver saw it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Dispatch {
    /// Calls Dialtone accepted.
    pub dispatched: u64,
    /// Refused dispatches by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// How long dispatching took.
    #[serde(skip)]
    pub duration: Duration,
    /// Dispatch RPC sent → INVITE at the simulator, ms.
    pub dispatch_to_invite_ms: Percentiles,
    /// INVITE at the simulator → the ACK of its 200, less the simulator's answer delay, ms:
    /// the daemon's half of answering.
    pub invite_to_ack_ms: Percentiles,
    /// The most calls live at the simulator at once.
    pub max_concurrent: u64,
    /// RTP sockets the simulator could not bind.
    pub media_errors: u64,
    /// Calls the simulator gave up on: no ACK for its 200, no answer to its BYE.
    pub timeouts: u64,
    /// Dialtone's final statuses.
    pub statuses: BTreeMap<String, u64>,
    /// Dialtone's end reasons.
    pub end_reasons: BTreeMap<String, u64>,
    /// The end reasons of the calls whose final status is not `completed`.
    pub failed_end_reasons: BTreeMap<String, u64>,
    /// RFC 4733 digits Dialtone heard whole, over all calls (its records' media statistics).
    pub dtmf_digits_heard: u64,
}

/// The audio of the answered calls, as the simulator measured it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MediaSummary {
    /// Calls with a measure.
    pub calls: u64,
    /// RTP packets the simulator sent.
    pub packets_out: u64,
    /// RTP packets it received.
    pub packets_in: u64,
    /// Lost on the way in, by sequence numbers.
    pub lost: u64,
    /// Arrived behind the highest sequence.
    pub late: u64,
    /// Calls with at least one interval between packets over 30 ms.
    pub calls_with_gaps: u64,
    /// Such intervals, all calls.
    pub gaps: u64,
    /// Per call, the longest interval between packets, ms.
    pub max_interval_ms: Percentiles,
    /// Per call, the RFC 3550 interarrival jitter at the end, ms.
    pub jitter_ms: Percentiles,
    /// Per call that got audio, the answer → the first RTP packet back, ms: how long the
    /// daemon took from the 200 OK to start the call's media.
    pub first_packet_ms: Percentiles,
    /// Complete talkspurts sent.
    pub talkspurts: u64,
    /// Of those, answered by audio (the echo) in time.
    pub answered_talkspurts: u64,
    /// Whose answer window was still open at the end (not counted either way).
    pub pending_talkspurts: u64,
    /// Per talkspurt that ended with the far end silent, its last packet sent → the first
    /// voiced packet back, ms (the far end's endpointing silence included).
    pub turn_ms: Percentiles,
    /// Talkspurts that ended while the far end was still speaking.
    pub turns_talked_over: u64,
    /// Per talkspurt that started while the far end was speaking, its first packet sent →
    /// the first silent packet back, ms.
    pub barge_in_ms: Percentiles,
    /// Such talkspurts that did not silence the far end before they ended.
    pub barge_ins_missed: u64,
    /// RFC 4733 digits the callees pressed.
    pub digits_sent: u64,
    /// The calls' first gaps, grouped into bursts: many calls hit at once is one stall (of a
    /// media worker, or of the machine), gaps spread over time are load.
    pub gap_bursts: Vec<GapBurst>,
}

/// Calls whose first gap over 30 ms came together.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GapBurst {
    /// When the burst's first gap ended, seconds after the first call was offered.
    pub at_s: f64,
    /// Calls whose first gap ended within 100 ms of that.
    pub calls: u64,
}

/// A stall of one of the machine's CPUs the load generator's stall watch saw during a run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MachineStall {
    /// Which CPU.
    pub cpu: usize,
    /// When it began, seconds after the first call was offered.
    pub at_s: f64,
    /// How long the watch overslept, ms.
    pub ms: f64,
}

impl MachineStall {
    /// `stalls` a watch saw, timed from `epoch`.
    pub fn timed(epoch: Instant, stalls: &[Stall]) -> Vec<Self> {
        stalls
            .iter()
            .map(|s| Self {
                cpu: s.cpu,
                at_s: signed_seconds(epoch, s.from),
                ms: s.late.as_secs_f64() * 1000.0,
            })
            .collect()
    }
}

/// Under a linear ramp: the first thing that went wrong, and how many calls were live then.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FirstTrouble {
    /// Seconds after the first call was offered.
    pub at_s: f64,
    /// Calls answered and not yet ended at that moment.
    pub live_calls: u64,
    /// What it was.
    pub what: String,
}

/// Whether `freezes` of the whole machine explain the gap between packets that arrived at
/// `from` and `until`: without the time every CPU stood still in it, the interval would have
/// been within [`GAP`].
fn explained(from: Instant, until: Instant, freezes: &[Freeze]) -> bool {
    let frozen: Duration = freezes.iter().map(|f| f.overlap(from, until)).sum();
    until.saturating_duration_since(from).saturating_sub(frozen) <= GAP
}

/// When the first gap of a call that `freezes` do not explain ended (with none, its first
/// gap). A call with more gaps than it kept the times of is taken to have one at the last
/// kept, unexplained.
fn first_unexplained_gap(m: &CallMeasure, freezes: &[Freeze]) -> Option<Instant> {
    let found = m
        .gap_spans
        .iter()
        .find(|(from, until)| !explained(*from, *until, freezes))
        .map(|(_, until)| *until);
    let unkept = m.gaps > m.gap_spans.len() as u64;
    found.or_else(|| {
        m.gap_spans
            .last()
            .filter(|_| unkept)
            .map(|(_, until)| *until)
    })
}

/// The earliest trouble in `records`: an interval over 30 ms between received packets (one
/// `freezes` of the whole machine do not explain; pass none for every gap), a talkspurt left
/// unanswered, or an answered-outcome call that was never set up (timed at its offer); `None`
/// when there was none.
pub fn first_trouble(records: &[CallRecord], freezes: &[Freeze]) -> Option<FirstTrouble> {
    let start = records.iter().filter_map(|r| r.offered_at).min()?;
    let mut troubles: Vec<(std::time::Instant, String)> = Vec::new();
    for r in records {
        if let Some(m) = &r.measure {
            if let Some(at) = first_unexplained_gap(m, freezes) {
                troubles.push((at, format!("a gap of over 30 ms on call {}", r.call_id)));
            }
            if let Some(at) = m.first_miss_at {
                troubles.push((at, format!("an unanswered talkspurt on call {}", r.call_id)));
            }
        }
        if r.outcome == "answer"
            && !r.answered
            && let Some(at) = r.offered_at
        {
            troubles.push((at, format!("call {} was not set up", r.call_id)));
        }
    }
    let (at, what) = troubles.into_iter().min_by_key(|(at, _)| *at)?;
    let live_calls = records
        .iter()
        .filter(|r| {
            r.answered_at.is_some_and(|answered| {
                answered <= at && answered + Duration::from_millis(r.held_ms) > at
            })
        })
        .count() as u64;
    Some(FirstTrouble {
        at_s: at.saturating_duration_since(start).as_secs_f64(),
        live_calls,
        what,
    })
}

/// The most concurrent calls a bench held within budget: of its steps within budget, the one
/// that held the most ([`Report::held`]); for a linear ramp (`linear`: its first trouble, if
/// any) that had trouble, the calls live just before it. With `apart_from_freezes`, a step
/// counts as within budget when the gaps freezes of the whole machine explain are all that
/// kept it out (the linear ramp's trouble is then the first such freezes do not explain).
pub fn most_held_within_budget<'a>(
    steps: impl IntoIterator<Item = &'a Report>,
    linear: Option<Option<&FirstTrouble>>,
    apart_from_freezes: bool,
) -> Option<u64> {
    match linear {
        Some(Some(trouble)) => trouble.live_calls.checked_sub(1).filter(|n| *n > 0),
        _ => steps
            .into_iter()
            .filter(|r| {
                if apart_from_freezes {
                    r.within_budget_apart_from_freezes()
                } else {
                    r.within_budget()
                }
            })
            .map(Report::held)
            .max(),
    }
}

/// A freeze of the whole machine during a run (every CPU stalled at once).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MachineFreeze {
    /// When it began, seconds after the first call was offered.
    pub at_s: f64,
    /// How long, ms.
    pub ms: f64,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Calls planned.
    pub planned: u64,
    /// Target dispatch rate, per second.
    pub target_rate: f64,
    /// Target concurrency.
    pub target_concurrency: u64,
    /// Achieved dispatch rate, per second.
    pub achieved_rate: f64,
    /// The dispatch side.
    pub dispatch: Dispatch,
    /// The audio side.
    pub media: MediaSummary,
    /// The daemon's resources and internal latencies, when the bench started it.
    pub daemon: Option<DaemonUsage>,
    /// Stalls of the machine's CPUs during the run ([`crate::stalls`]), when watched.
    pub machine_stalls: Option<Vec<MachineStall>>,
    /// Freezes of the whole machine among them, and the calls whose gaps they do not all
    /// explain, when watched.
    pub machine_freezes: Option<Freezes>,
    /// Why the run is not within budget (empty: it is).
    pub failures: Vec<String>,
    /// Why it would not be within budget leaving out the gaps freezes of the whole machine
    /// explain (empty: it would).
    pub failures_apart_from_freezes: Vec<String>,
    /// When the first call was offered: what the times in the report count from.
    #[serde(skip)]
    epoch: Option<Instant>,
}

/// The freezes of the whole machine during a run, and what they explain.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Freezes {
    /// Each freeze, in time order.
    pub freezes: Vec<MachineFreeze>,
    /// Gaps they explain: without the time the machine stood still in them, within 30 ms.
    pub gaps_explained: u64,
    /// Calls with a gap they do not explain.
    pub calls_with_unexplained_gaps: u64,
}

/// The daemon's own figures over a run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DaemonUsage {
    /// CPU seconds (user + system) during the run.
    pub cpu_seconds: f64,
    /// Call-seconds held (sum over calls of answered time).
    pub call_seconds: f64,
    /// CPU time per call-second, ms.
    pub cpu_ms_per_call_second: f64,
    /// Resident memory before the run, KiB.
    pub rss_idle_kib: u64,
    /// Resident memory at its highest sample during the run, KiB.
    pub rss_peak_kib: u64,
    /// (peak − idle) / most concurrent calls, KiB.
    pub kib_per_call: f64,
    /// RTP in → frame in the speech ring, from the daemon's histogram, ms.
    pub inbound_ms: Percentiles,
    /// Agent frame → RTP out, ms.
    pub outbound_ms: Percentiles,
    /// One call's 20 ms media step, CPU, ms.
    pub step_ms: Percentiles,
    /// How late the daemon's media ticks started, ms (bucket upper bounds).
    pub tick_lateness_ms: Percentiles,
    /// Barge-ins from the speech loop's decision to the agent's audio stopped on the wire (the
    /// media tick that dropped what was queued), ms (bucket upper bounds).
    pub barge_in_stop_ms: Percentiles,
    /// A Media Streams app's calls: the caller's RTP packet received → its `media` event
    /// written to the app's websocket (one frame a second a call), ms (bucket upper bounds).
    pub streams_inbound_ms: Percentiles,
    /// The app's `media` event read → the media tick taking its first frame for the wire, ms
    /// (bucket upper bounds).
    pub streams_outbound_ms: Percentiles,
    /// Ticks its media workers skipped, having fallen over 100 ms behind (since it started).
    pub ticks_skipped: u64,
    /// Media steps (or a tick's packets) one worker took for another whose thread had not
    /// done them 3 ms past their deadline (a stopped CPU), since it started.
    pub steps_stood_in: u64,
    /// Caller frames dropped because a call's speech loop fell over a quarter of a second
    /// behind them (the oldest are dropped, so it hears the present), over the calls ended
    /// since the daemon started.
    pub speech_ring_overflows: u64,
    /// CPU seconds the load generator itself used meanwhile (it shares the machine).
    pub loadgen_cpu_seconds: f64,
    /// CPU time the hypervisor gave to other guests while this machine wanted it (`steal` in
    /// `/proc/stat`, all CPUs), during the run: a worker stalled that way misses its tick
    /// whatever Dialtone does.
    pub host_steal_seconds: f64,
}

impl Report {
    /// The report of a run of `plan` whose simulator kept `records`.
    pub fn new(plan: &LoadPlan, records: &[CallRecord], dispatch: Dispatch) -> Self {
        let mut media = MediaSummary::default();
        let mut intervals = Vec::new();
        let mut jitters = Vec::new();
        let mut first_packets = Vec::new();
        let (mut turns, mut barge_ins) = (Vec::new(), Vec::new());
        for m in records.iter().filter_map(|r| r.measure.as_ref()) {
            media.calls += 1;
            media.packets_out += m.packets_out;
            media.packets_in += m.packets_in;
            media.lost += m.lost;
            media.late += m.late;
            media.gaps += m.gaps;
            media.calls_with_gaps += u64::from(m.gaps > 0);
            media.talkspurts += m.talkspurts;
            media.answered_talkspurts += m.answered_talkspurts;
            media.digits_sent += m.digits_sent;
            intervals.push(m.max_interval_ms);
            jitters.push(m.jitter_ms);
            first_packets.extend(m.first_packet_ms);
            turns.extend_from_slice(&m.turn_ms);
            barge_ins.extend_from_slice(&m.barge_in_ms);
            media.turns_talked_over += m.turns_talked_over;
            media.barge_ins_missed += m.barge_ins_missed;
        }
        media.turn_ms = Percentiles::of(&mut turns);
        media.barge_in_ms = Percentiles::of(&mut barge_ins);
        media.pending_talkspurts = records.iter().map(|r| r.pending_talkspurts).sum();
        media.max_interval_ms = Percentiles::of(&mut intervals);
        media.jitter_ms = Percentiles::of(&mut jitters);
        media.first_packet_ms = Percentiles::of(&mut first_packets);
        let epoch = records.iter().filter_map(|r| r.offered_at).min();
        if let Some(epoch) = epoch {
            let gaps: Vec<Instant> = records
                .iter()
                .filter_map(|r| Some(r.measure.as_ref()?.gap_spans.first()?.1))
                .collect();
            media.gap_bursts = bursts(epoch, gaps);
        }
        let mut report = Self {
            planned: plan.calls,
            target_rate: plan.rate,
            target_concurrency: plan.max_concurrency,
            achieved_rate: dispatch.dispatched as f64 / dispatch.duration.as_secs_f64().max(0.001),
            dispatch,
            media,
            daemon: None,
            machine_stalls: None,
            machine_freezes: None,
            failures: Vec::new(),
            failures_apart_from_freezes: Vec::new(),
            epoch,
        };
        report.judge();
        report
    }

    /// Notes the stalls of the machine a watch saw during the run, the freezes of the whole
    /// machine among them ([`crate::stalls::freezes`]), and which of the gaps `records` had
    /// those explain; judges the run again.
    pub fn note_machine_stalls(
        &mut self,
        stalls: &[Stall],
        freezes: &[Freeze],
        records: &[CallRecord],
    ) {
        self.machine_stalls = Some(
            self.epoch
                .map_or_else(Vec::new, |epoch| MachineStall::timed(epoch, stalls)),
        );
        let measures = records.iter().filter_map(|r| r.measure.as_ref());
        let mut explained_gaps = 0;
        let mut unexplained_calls = 0;
        for m in measures {
            explained_gaps += m
                .gap_spans
                .iter()
                .filter(|(from, until)| explained(*from, *until, freezes))
                .count() as u64;
            unexplained_calls += u64::from(first_unexplained_gap(m, freezes).is_some());
        }
        self.machine_freezes = Some(Freezes {
            freezes: self.epoch.map_or_else(Vec::new, |epoch| {
                freezes
                    .iter()
                    .map(|f| MachineFreeze {
                        at_s: signed_seconds(epoch, f.from),
                        ms: f.length().as_secs_f64() * 1000.0,
                    })
                    .collect()
            }),
            gaps_explained: explained_gaps,
            calls_with_unexplained_gaps: unexplained_calls,
        });
        self.judge();
    }

    /// Fills `failures` from the budgets: every planned call dispatched and completed, no
    /// media gap beyond the 20 ms clock + 10 ms, every talkspurt answered, the daemon's media
    /// steps within 0.5 ms at p99; and `failures_apart_from_freezes` the same, counting only
    /// the gaps no freeze of the whole machine explains (once the machine's stalls are noted).
    pub fn judge(&mut self) {
        let mut failures = Vec::new();
        let d = &self.dispatch;
        if d.dispatched < self.planned {
            failures.push(format!(
                "{} of {} calls were not dispatched ({:?})",
                self.planned - d.dispatched,
                self.planned,
                d.errors
            ));
        }
        let completed = d.statuses.get("completed").copied().unwrap_or_default();
        if completed < d.dispatched {
            failures.push(format!(
                "{} of {} calls did not complete: {:?}",
                d.dispatched - completed,
                d.dispatched,
                d.statuses
            ));
        }
        if d.media_errors > 0 {
            failures.push(format!(
                "{} calls had no RTP socket at the simulator",
                d.media_errors
            ));
        }
        let m = &self.media;
        // Gaps are the one budget freezes of the whole machine can take back.
        let mut apart_from_freezes = failures.clone();
        if m.calls_with_gaps > 0 {
            let gaps = format!(
                "{} calls had gaps over 30 ms in the audio they received ({} gaps, worst {:.1} ms)",
                m.calls_with_gaps, m.gaps, m.max_interval_ms.max
            );
            match &self.machine_freezes {
                Some(f) if f.calls_with_unexplained_gaps > 0 => {
                    apart_from_freezes.push(format!(
                        "{} calls had gaps over 30 ms that no freeze of the whole machine explains",
                        f.calls_with_unexplained_gaps
                    ));
                }
                Some(_) => {}
                None => apart_from_freezes.push(gaps.clone()),
            }
            failures.push(gaps);
        }
        let mut later = Vec::new();
        let missed = m
            .talkspurts
            .saturating_sub(m.answered_talkspurts + m.pending_talkspurts);
        if missed > 0 {
            later.push(format!(
                "{missed} of {} talkspurts got no audio back in time",
                m.talkspurts
            ));
        }
        if m.digits_sent > d.dtmf_digits_heard {
            later.push(format!(
                "Dialtone heard {} of the {} RFC 4733 digits the callees pressed",
                d.dtmf_digits_heard, m.digits_sent
            ));
        }
        if let Some(daemon) = &self.daemon
            && daemon.step_ms.p99 > 0.5
        {
            later.push(format!(
                "the media step's p99 is {:.3} ms (budget 0.5 ms)",
                daemon.step_ms.p99
            ));
        }
        apart_from_freezes.extend(later.iter().cloned());
        failures.extend(later);
        self.failures_apart_from_freezes = apart_from_freezes;
        self.failures = failures;
    }

    /// Whether the run is within budget.
    pub fn within_budget(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether it would be, leaving out the gaps freezes of the whole machine explain.
    pub fn within_budget_apart_from_freezes(&self) -> bool {
        self.failures_apart_from_freezes.is_empty()
    }

    /// The calls the run really had live at once: at most the planned ones, fewer when they
    /// were set up too slowly to all be live together (the early ones ended before the late
    /// ones started).
    pub fn held(&self) -> u64 {
        self.planned.min(self.dispatch.max_concurrent)
    }

    /// The report as a Markdown table.
    pub fn markdown(&self) -> String {
        let d = &self.dispatch;
        let m = &self.media;
        let ms = |p: &Percentiles| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                p.p50, p.p99, p.max
            )
        };
        let mut rows = vec![
            (
                "calls dispatched / planned".to_owned(),
                format!("{} / {}", d.dispatched, self.planned),
            ),
            ("final statuses".to_owned(), format!("{:?}", d.statuses)),
            (
                "most concurrent calls".to_owned(),
                d.max_concurrent.to_string(),
            ),
            (
                "dispatch rate (target)".to_owned(),
                format!("{:.1}/s ({:.1}/s)", self.achieved_rate, self.target_rate),
            ),
            ("dispatch → INVITE".to_owned(), ms(&d.dispatch_to_invite_ms)),
            (
                "INVITE → ACK, less the callee's answer delay".to_owned(),
                ms(&d.invite_to_ack_ms),
            ),
            (
                "RTP received / sent by the simulator".to_owned(),
                format!(
                    "{} / {} (lost {}, late {})",
                    m.packets_in, m.packets_out, m.lost, m.late
                ),
            ),
            (
                "calls with gaps > 30 ms".to_owned(),
                gaps_row(m, self.machine_stalls.as_deref()),
            ),
            (
                "longest interval per call".to_owned(),
                ms(&m.max_interval_ms),
            ),
            ("interarrival jitter per call".to_owned(), ms(&m.jitter_ms)),
            (
                "answer → first RTP packet back, per call".to_owned(),
                ms(&m.first_packet_ms),
            ),
            (
                "talkspurts echoed back".to_owned(),
                format!(
                    "{} of {} ({} still open)",
                    m.answered_talkspurts, m.talkspurts, m.pending_talkspurts
                ),
            ),
        ];
        if m.turn_ms.count > 0 {
            rows.push((
                "talkspurt end → first voiced packet back (endpointing included)".to_owned(),
                format!(
                    "{} over {} turns ({} talkspurts ended over the far end's speech)",
                    ms(&m.turn_ms),
                    m.turn_ms.count,
                    m.turns_talked_over
                ),
            ));
        }
        if m.barge_in_ms.count + m.barge_ins_missed as usize > 0 {
            rows.push((
                "talkspurt start over the far end's speech → first silent packet back".to_owned(),
                format!(
                    "{} over {} barge-ins ({} not silenced)",
                    ms(&m.barge_in_ms),
                    m.barge_in_ms.count,
                    m.barge_ins_missed
                ),
            ));
        }
        if m.digits_sent > 0 {
            rows.push((
                "RFC 4733 digits pressed / heard by Dialtone".to_owned(),
                format!("{} / {}", m.digits_sent, d.dtmf_digits_heard),
            ));
        }
        if let Some(u) = &self.daemon {
            rows.push((
                "daemon CPU per call-second".to_owned(),
                format!(
                    "{:.3} ms ({:.1} s CPU over {:.0} call-s)",
                    u.cpu_ms_per_call_second, u.cpu_seconds, u.call_seconds
                ),
            ));
            rows.push((
                "load generator CPU (same machine)".to_owned(),
                format!("{:.1} s", u.loadgen_cpu_seconds),
            ));
            rows.push((
                "CPU stolen by the hypervisor during the run".to_owned(),
                format!("{:.2} s", u.host_steal_seconds),
            ));
            rows.push((
                "daemon memory per call".to_owned(),
                format!(
                    "{:.0} KiB (RSS {} → {} KiB)",
                    u.kib_per_call, u.rss_idle_kib, u.rss_peak_kib
                ),
            ));
            rows.push((
                "RTP in → speech ring, with the jitter buffer's delay".to_owned(),
                ms(&u.inbound_ms),
            ));
            rows.push((
                "agent frame queued → RTP out".to_owned(),
                ms(&u.outbound_ms),
            ));
            rows.push(("media step per call per 20 ms".to_owned(), ms(&u.step_ms)));
            rows.push((
                "media tick started behind its deadline".to_owned(),
                ms(&u.tick_lateness_ms),
            ));
            rows.push((
                "media ticks skipped (a worker over 100 ms behind), since the daemon started"
                    .to_owned(),
                u.ticks_skipped.to_string(),
            ));
            rows.push((
                "media steps (or a tick's packets) taken by a stand-in (a worker's thread \
                 not done 3 ms past the deadline), since the daemon started"
                    .to_owned(),
                u.steps_stood_in.to_string(),
            ));
            rows.push((
                "caller frames dropped, a speech loop over 0.25 s behind them, over the calls \
                 ended since the daemon started"
                    .to_owned(),
                u.speech_ring_overflows.to_string(),
            ));
        }
        if let Some(stalls) = &self.machine_stalls {
            rows.push((
                format!(
                    "stalls of a CPU (a real-time thread pinned to it woke over {} ms late)",
                    crate::stalls::STALL.as_millis()
                ),
                describe_stalls(stalls),
            ));
        }
        if let Some(f) = &self.machine_freezes {
            rows.push((
                "freezes of the whole machine (every CPU stalled at once)".to_owned(),
                describe_freezes(f),
            ));
        }
        let verdict = if self.within_budget() {
            "within budget".to_owned()
        } else if self.within_budget_apart_from_freezes() {
            format!(
                "NOT within budget: {}; within budget leaving out the gaps freezes of the whole \
                 machine explain",
                self.failures.join("; ")
            )
        } else {
            format!("NOT within budget: {}", self.failures.join("; "))
        };
        rows.push(("verdict".to_owned(), verdict));
        let mut out = String::from("| measure | value |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out
    }
}

/// `at` in seconds after `epoch`, negative when before it.
fn signed_seconds(epoch: Instant, at: Instant) -> f64 {
    match at.checked_duration_since(epoch) {
        Some(after) => after.as_secs_f64(),
        None => -epoch.saturating_duration_since(at).as_secs_f64(),
    }
}

/// `gaps` (when calls' first gaps ended) grouped into bursts, in time order.
fn bursts(epoch: Instant, mut gaps: Vec<Instant>) -> Vec<GapBurst> {
    gaps.sort_unstable();
    let mut bursts: Vec<(Instant, GapBurst)> = Vec::new();
    for at in gaps {
        match bursts.last_mut() {
            Some((first, burst)) if at.saturating_duration_since(*first) <= BURST => {
                burst.calls += 1;
            }
            _ => bursts.push((
                at,
                GapBurst {
                    at_s: signed_seconds(epoch, at),
                    calls: 1,
                },
            )),
        }
    }
    bursts.into_iter().map(|(_, burst)| burst).collect()
}

/// The stall of a CPU that can explain `burst`: one that overlaps the 50 ms before the
/// burst's first gap ended (a gap over 30 ms begins at most that long before it ends, at the
/// sizes these are).
fn stall_behind(burst: &GapBurst, stalls: &[MachineStall]) -> Option<MachineStall> {
    stalls
        .iter()
        .filter(|s| s.at_s <= burst.at_s && s.at_s + s.ms / 1000.0 >= burst.at_s - 0.05)
        .max_by(|a, b| a.ms.total_cmp(&b.ms))
        .copied()
}

/// The gaps' row: how many calls, and the largest bursts, each with the stall of a CPU
/// behind it when the watch saw one.
fn gaps_row(m: &MediaSummary, stalls: Option<&[MachineStall]>) -> String {
    let mut row = format!("{} of {} ({} gaps)", m.calls_with_gaps, m.calls, m.gaps);
    if !m.gap_bursts.is_empty() {
        let mut largest = m.gap_bursts.clone();
        largest.sort_by_key(|b| std::cmp::Reverse(b.calls));
        let listed: Vec<String> = largest
            .iter()
            .take(LISTED)
            .map(|b| {
                let mut burst = format!("{} at {:.1} s", b.calls, b.at_s);
                if let Some(s) = stalls.and_then(|stalls| stall_behind(b, stalls)) {
                    burst.push_str(&format!(
                        " (CPU {} stalled {:.0} ms from {:.2} s)",
                        s.cpu, s.ms, s.at_s
                    ));
                }
                burst
            })
            .collect();
        let bursts = m.gap_bursts.len();
        row.push_str(&format!(
            "; {bursts} {} of calls hit within 100 ms, the largest: {}",
            if bursts == 1 { "burst" } else { "bursts" },
            listed.join(", ")
        ));
    }
    row
}

/// Freezes of the whole machine in a few words: how many, the longest, and what they explain.
fn describe_freezes(f: &Freezes) -> String {
    if f.freezes.is_empty() {
        return "none".to_owned();
    }
    format!(
        "{}; gaps they explain: {}; calls with a gap they do not: {}",
        the_longest(
            &f.freezes,
            |s| s.ms,
            |s| format!("{:.0} ms from {:.2} s", s.ms, s.at_s)
        ),
        f.gaps_explained,
        f.calls_with_unexplained_gaps
    )
}

/// How many `items` there are, and the [`LISTED`] longest by `ms`, each as `describe` puts it.
fn the_longest<T: Clone>(
    items: &[T],
    ms: impl Fn(&T) -> f64,
    describe: impl Fn(&T) -> String,
) -> String {
    let mut longest = items.to_vec();
    longest.sort_by(|a, b| ms(b).total_cmp(&ms(a)));
    let listed: Vec<String> = longest.iter().take(LISTED).map(describe).collect();
    format!("{}, the longest: {}", items.len(), listed.join(", "))
}

/// Stalls of the machine's CPUs in a few words: how many, and the longest.
pub fn describe_stalls(stalls: &[MachineStall]) -> String {
    if stalls.is_empty() {
        return "none".to_owned();
    }
    the_longest(
        stalls,
        |s| s.ms,
        |s| format!("{:.0} ms on CPU {} from {:.1} s", s.ms, s.cpu, s.at_s),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64, t0: Instant, measure: CallMeasure) -> CallRecord {
        // Call n offered at n × 10 ms, answered 200 ms later, held 5 s.
        let offered = t0 + Duration::from_millis(10 * n);
        CallRecord {
            call_id: format!("c{n}"),
            dispatch_id: None,
            outcome: "answer".into(),
            offered_at: Some(offered),
            answered: true,
            answered_at: Some(offered + Duration::from_millis(200)),
            held_ms: 5000,
            ended_by: Some("callee".into()),
            measure: Some(measure),
            pending_talkspurts: 0,
        }
    }

    #[test]
    fn the_first_trouble_is_timed_and_counts_the_calls_live_then() {
        let t0 = Instant::now();
        let mut records: Vec<CallRecord> = (0..100)
            .map(|n| record(n, t0, CallMeasure::default()))
            .collect();
        assert_eq!(first_trouble(&records, &[]), None);
        // A gap on call 90 at 1.2 s and a missed talkspurt on call 10 at 1.1 s: the miss is
        // first; calls 0..=90 were answered by then (answered at n × 10 + 200 ms).
        gap(&mut records[90], t0, 1160, 1200);
        records[10].measure.as_mut().unwrap().first_miss_at =
            Some(t0 + Duration::from_millis(1100));
        let trouble = first_trouble(&records, &[]).unwrap();
        assert_eq!(trouble.live_calls, 91);
        assert!((trouble.at_s - 1.1).abs() < 1e-6);
        assert!(trouble.what.contains("c10"), "{}", trouble.what);
        // A call that should have been answered and was not: timed at its offer.
        records[5].answered = false;
        records[5].answered_at = None;
        let trouble = first_trouble(&records, &[]).unwrap();
        assert!((trouble.at_s - 0.05).abs() < 1e-6);
        assert_eq!(trouble.live_calls, 0);
        assert!(trouble.what.contains("not set up"));
    }

    #[test]
    fn gaps_that_come_together_are_one_burst_and_stalls_are_timed_from_the_first_offer() {
        let t0 = Instant::now();
        let mut records: Vec<CallRecord> = (0..100)
            .map(|n| record(n, t0, CallMeasure::default()))
            .collect();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // 40 calls' first gaps end within 100 ms of 8.4 s (one stall), 2 more at 12 s and
        // 12.5 s (apart: two bursts).
        for (n, r) in records.iter_mut().enumerate().take(40) {
            let end = 8400 + 2 * n as u64;
            gap(r, t0, end - 35, end);
        }
        gap(&mut records[50], t0, 11_960, 12_000);
        gap(&mut records[60], t0, 12_460, 12_500);
        let mut report = Report::new(&plan(), &records, Dispatch::default());
        let at: Vec<(u64, f64)> = report
            .media
            .gap_bursts
            .iter()
            .map(|b| (b.calls, (b.at_s * 10.0).round() / 10.0))
            .collect();
        assert_eq!(at, [(40, 8.4), (1, 12.0), (1, 12.5)]);
        assert!(
            report
                .markdown()
                .contains("3 bursts of calls hit within 100 ms, the largest: 40 at 8.4 s")
        );
        report.note_machine_stalls(
            &[Stall {
                cpu: 1,
                from: ms(8260),
                late: Duration::from_millis(158),
            }],
            &[],
            &records,
        );
        let stalls = report.machine_stalls.clone().unwrap();
        assert_eq!(stalls.len(), 1);
        assert!((stalls[0].at_s - 8.26).abs() < 1e-6 && (stalls[0].ms - 158.0).abs() < 1e-6);
        let markdown = report.markdown();
        assert!(markdown.contains("1, the longest: 158 ms on CPU 1 from 8.3 s"));
        // The burst the stall explains says so; the later ones, apart from it, do not.
        assert!(markdown.contains(
            "the largest: 40 at 8.4 s (CPU 1 stalled 158 ms from 8.26 s), 1 at 12.0 s, 1 at 12.5 s"
        ));
        report.note_machine_stalls(&[], &[], &records);
        assert!(report.markdown().contains("| none |"));
    }

    #[test]
    fn gaps_a_freeze_of_the_whole_machine_explains_are_told_apart() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut records: Vec<CallRecord> = (0..100)
            .map(|n| record(n, t0, CallMeasure::default()))
            .collect();
        // Both CPUs stopped from 3.0 s to 3.05 s: the 60 calls live then each had a 65 ms
        // interval across it (15 ms of it the machine running: within the 30 ms).
        for r in records.iter_mut().take(60) {
            gap(r, t0, 2_990, 3_055);
        }
        // Call 70's gap is 30 ms longer than the freeze can account for; call 80's is later.
        gap(&mut records[70], t0, 2_990, 3_085);
        gap(&mut records[80], t0, 4_000, 4_040);
        let stalls = [
            Stall {
                cpu: 0,
                from: ms(2_995),
                late: Duration::from_millis(60),
            },
            Stall {
                cpu: 1,
                from: ms(3_000),
                late: Duration::from_millis(50),
            },
        ];
        let freezes = crate::stalls::freezes(&stalls, 2);
        assert_eq!(freezes.len(), 1);
        let mut report = Report::new(&plan(), &records, completed(100));
        report.note_machine_stalls(&stalls, &freezes, &records);
        let f = report.machine_freezes.clone().unwrap();
        assert_eq!((f.gaps_explained, f.calls_with_unexplained_gaps), (60, 2));
        assert!(!report.within_budget() && !report.within_budget_apart_from_freezes());
        let strict = first_trouble(&records, &[]).unwrap();
        let apart = first_trouble(&records, &freezes).unwrap();
        assert!((strict.at_s - 3.055).abs() < 1e-6, "{strict:?}");
        assert!(apart.what.contains("c70"), "{apart:?}");
        // Without calls 70 and 80, only the freeze's gaps are left: within budget apart from it.
        records.truncate(60);
        let mut plan = plan();
        plan.calls = 60;
        let mut report = Report::new(&plan, &records, completed(60));
        report.note_machine_stalls(&stalls, &freezes, &records);
        assert!(!report.within_budget() && report.within_budget_apart_from_freezes());
        assert_eq!(first_trouble(&records, &freezes), None);
        let markdown = report.markdown();
        assert!(
            markdown.contains("| freezes of the whole machine (every CPU stalled at once) | 1, the longest: 50 ms from 3.00 s; gaps they explain: 60; calls with a gap they do not: 0 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "within budget leaving out the gaps freezes of the whole machine explain"
            )
        );
        let steps = [report];
        assert_eq!(most_held_within_budget(&steps, None, false), None);
        assert_eq!(most_held_within_budget(&steps, None, true), Some(60));
        // A call with more gaps than it kept the times of counts as trouble at the last kept.
        let m = records[0].measure.as_mut().unwrap();
        m.gaps = crate::voice::GAP_SPANS_KEPT as u64 + 1;
        assert_eq!(first_unexplained_gap(m, &freezes), Some(ms(3_055)));
    }

    /// `calls` dispatched calls, every one completed, all live at once.
    fn completed(calls: u64) -> Dispatch {
        Dispatch {
            dispatched: calls,
            max_concurrent: calls,
            statuses: [("completed".to_owned(), calls)].into(),
            ..Dispatch::default()
        }
    }

    /// A gap on `record` between packets arriving `from` and `until` ms after `t0`.
    fn gap(record: &mut CallRecord, t0: Instant, from: u64, until: u64) {
        let m = record.measure.as_mut().unwrap();
        m.gaps += 1;
        m.gap_spans.push((
            t0 + Duration::from_millis(from),
            t0 + Duration::from_millis(until),
        ));
    }

    fn plan() -> LoadPlan {
        LoadPlan {
            agent_id: "a".into(),
            to: "+15550000000".into(),
            calls: 100,
            rate: 100.0,
            max_concurrency: 100,
            deadline: Duration::from_secs(60),
            progress: false,
            watch_cpu: None,
            webhook_url: None,
        }
    }

    fn step(planned: u64, live_at_once: u64, failures: &[&str]) -> Report {
        Report {
            planned,
            dispatch: Dispatch {
                max_concurrent: live_at_once,
                ..Dispatch::default()
            },
            failures: failures.iter().map(|f| (*f).to_owned()).collect(),
            failures_apart_from_freezes: failures.iter().map(|f| (*f).to_owned()).collect(),
            ..Report::default()
        }
    }

    #[test]
    fn a_step_counts_for_the_calls_it_had_live_at_once() {
        // 1000 planned, but set up so slowly that only 630 were ever live together.
        let steps = [step(500, 500, &[]), step(1000, 630, &[])];
        assert_eq!(most_held_within_budget(&steps, None, false), Some(630));
        // A step out of budget counts for nothing, however many it held.
        let steps = [step(250, 250, &[]), step(500, 500, &["gaps"])];
        assert_eq!(most_held_within_budget(&steps, None, false), Some(250));
        assert_eq!(
            most_held_within_budget(&[step(100, 100, &["gaps"])], None, false),
            None
        );
    }

    #[test]
    fn a_linear_ramp_counts_the_calls_live_before_its_first_trouble() {
        let ramp = [step(1000, 1000, &["unechoed talkspurts"])];
        let trouble = FirstTrouble {
            at_s: 9.5,
            live_calls: 957,
            what: "an unanswered talkspurt on call c1".into(),
        };
        assert_eq!(
            most_held_within_budget(&ramp, Some(Some(&trouble)), false),
            Some(956)
        );
        // No trouble on the way up: what the ramp held, if it was within budget.
        let clean = [step(1000, 962, &[])];
        assert_eq!(
            most_held_within_budget(&clean, Some(None), false),
            Some(962)
        );
        let first = FirstTrouble {
            live_calls: 1,
            ..trouble
        };
        assert_eq!(
            most_held_within_budget(&ramp, Some(Some(&first)), false),
            None
        );
    }
}
