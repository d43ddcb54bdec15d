//! A watch for stalls of the machine's CPUs, so a bench can tell them from Dialtone's own.
//!
//! On a virtual machine the hypervisor can stop a vCPU for tens of milliseconds; every thread
//! on it stops too, and the calls a media worker there serves all see a gap, whatever the
//! daemon does; a stop of 10 ms is enough to push a worker's calls over the 30 ms a gap is
//! counted at. One thread pinned to each CPU sleeps 2 ms at a time and notes each time it woke
//! more than [`STALL`] late. It runs under `SCHED_FIFO` one priority above the media
//! workers (where permitted), so no thread of the machine — not even a media worker's long
//! tick — can hold it up: only the kernel or the hypervisor.
//!
//! Where every CPU stalled at once ([`freezes`]), the whole machine stood still: no thread
//! ran, so no process could have sent a packet then. A bench reports its figures twice: as
//! measured, and leaving out the gaps such a freeze explains.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use thread_priority::{
    RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};

use crate::LoadgenError;

/// A wake-up this much later than asked for is a stall: half the 10 ms by which a gap exceeds
/// the pacing clock, so a stop long enough to cause a gap on its own is always seen.
pub const STALL: Duration = Duration::from_millis(5);
/// How long a watch thread sleeps between looks at the clock: short enough that a stall of
/// 10 ms is seen as one of at least 8 ms wherever it falls, long enough that a wake-up (a few
/// microseconds above the media workers) costs what it watches a fraction of a percent.
const NAP: Duration = Duration::from_millis(2);
/// The watch threads' real-time priority: above the media workers' (the lowest, 1).
const PRIORITY: u8 = 2;

/// One stall: which CPU, when its watch should have woken, and how much later it did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    /// The CPU the watch thread is pinned to.
    pub cpu: usize,
    /// When it should have woken.
    pub from: Instant,
    /// How much later it woke.
    pub late: Duration,
}

/// The running watch; [`StallWatch::finish`] stops it and gives what it saw.
#[derive(Debug)]
pub struct StallWatch {
    running: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Stall>>>,
    realtime: bool,
}

impl StallWatch {
    /// Starts a watch thread on each CPU this process may run on.
    pub fn start() -> Result<Self, LoadgenError> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(|errno| LoadgenError::Io {
            what: "reading the CPUs this process may use".into(),
            source: errno.into(),
        })?;
        let running = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for cpu in (0..CpuSet::count()).filter(|&cpu| allowed.is_set(cpu).unwrap_or(false)) {
            let (running, ready_tx) = (running.clone(), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("loadgen-stalls-{cpu}"))
                .spawn(move || {
                    let _ = ready_tx.send(pin_and_raise(cpu));
                    drop(ready_tx);
                    watch(cpu, &running)
                })
                .map_err(LoadgenError::io("starting the stall watch"))?;
            threads.push(thread);
        }
        drop(ready_tx);
        // Real-time only if every thread is: one that is not can be held up by anything.
        let answers: Vec<bool> = ready.iter().take(threads.len()).collect();
        let realtime = answers.len() == threads.len() && answers.into_iter().all(|pinned| pinned);
        Ok(Self {
            running,
            threads,
            realtime,
        })
    }

    /// Whether every watch thread is pinned to its CPU under real-time scheduling; where not,
    /// a busy machine's other threads delay them too and they report that as stalls.
    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// How many CPUs it watches (one thread each).
    pub fn cpus(&self) -> usize {
        self.threads.len()
    }

    /// Stops the watch; the stalls it saw, in time order.
    pub fn finish(self) -> Vec<Stall> {
        self.running.store(false, Ordering::Relaxed);
        let mut stalls: Vec<Stall> = self
            .threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap_or_default())
            .collect();
        stalls.sort_by_key(|s| s.from);
        stalls
    }
}

/// Pins the calling thread to `cpu` and raises it above the media workers; whether both held.
fn pin_and_raise(cpu: usize) -> bool {
    let mut only = CpuSet::new();
    let pinned = only.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &only).is_ok();
    let raised = ThreadPriorityValue::try_from(PRIORITY).is_ok_and(|priority| {
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(priority),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .is_ok()
    });
    pinned && raised
}

/// One watch thread's loop, until `running` is cleared.
fn watch(cpu: usize, running: &AtomicBool) -> Vec<Stall> {
    let mut stalls = Vec::new();
    while running.load(Ordering::Relaxed) {
        let due = Instant::now() + NAP;
        std::thread::sleep(NAP);
        if let Some(stall) = stall(cpu, due, Instant::now()) {
            stalls.push(stall);
        }
    }
    stalls
}

/// The stall of a wake-up on `cpu` due at `due` that came at `woke`, if it was one.
fn stall(cpu: usize, due: Instant, woke: Instant) -> Option<Stall> {
    let late = woke.saturating_duration_since(due);
    (late > STALL).then_some(Stall {
        cpu,
        from: due,
        late,
    })
}

/// A time when every watched CPU was stalled: the whole machine stood still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freeze {
    /// When the last of the CPUs stopped.
    pub from: Instant,
    /// When the first of them ran again.
    pub until: Instant,
}

impl Freeze {
    /// How long the machine stood still.
    pub fn length(&self) -> Duration {
        self.until.saturating_duration_since(self.from)
    }

    /// How much of the span `from..until` the freeze covers.
    pub fn overlap(&self, from: Instant, until: Instant) -> Duration {
        self.until
            .min(until)
            .saturating_duration_since(self.from.max(from))
    }
}

/// The freezes in `stalls` of a watch over `cpus` CPUs: the times every one of them was
/// stalled, in time order. A stall counts from when its watch should have woken; the stop
/// may have begun up to one nap earlier, so a freeze is never longer than the machine's.
pub fn freezes(stalls: &[Stall], cpus: usize) -> Vec<Freeze> {
    let cpu_ids: std::collections::BTreeSet<usize> = stalls.iter().map(|s| s.cpu).collect();
    if cpus == 0 || cpu_ids.len() < cpus {
        return Vec::new();
    }
    let mut frozen: Option<Vec<Freeze>> = None;
    for cpu in cpu_ids {
        let spans: Vec<Freeze> = stalls
            .iter()
            .filter(|s| s.cpu == cpu)
            .map(|s| Freeze {
                from: s.from,
                until: s.from + s.late,
            })
            .collect();
        frozen = Some(match frozen {
            None => spans,
            Some(so_far) => intersect(&so_far, &spans),
        });
    }
    frozen.unwrap_or_default()
}

/// The times both lists of spans cover; each list is in time order and its spans do not
/// overlap (a watch thread's stalls follow one another), and so is the result.
fn intersect(a: &[Freeze], b: &[Freeze]) -> Vec<Freeze> {
    let mut both = Vec::new();
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    while let (Some(p), Some(q)) = (x.peek(), y.peek()) {
        let (from, until) = (p.from.max(q.from), p.until.min(q.until));
        if from < until {
            both.push(Freeze { from, until });
        }
        if p.until <= q.until {
            x.next();
        } else {
            y.next();
        }
    }
    both
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall_at(cpu: usize, t0: Instant, from_ms: u64, late_ms: u64) -> Stall {
        Stall {
            cpu,
            from: t0 + Duration::from_millis(from_ms),
            late: Duration::from_millis(late_ms),
        }
    }

    #[test]
    fn a_freeze_is_where_every_cpu_stalled_at_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let stalls = [
            stall_at(0, t0, 100, 60),
            stall_at(1, t0, 130, 50),
            // CPU 1 alone: the other ran, so the machine did not stand still.
            stall_at(1, t0, 400, 30),
            stall_at(0, t0, 700, 10),
            stall_at(1, t0, 705, 20),
        ];
        assert_eq!(
            freezes(&stalls, 2),
            vec![
                Freeze {
                    from: ms(130),
                    until: ms(160)
                },
                Freeze {
                    from: ms(705),
                    until: ms(710)
                },
            ]
        );
        // A third CPU that never stalled: no freeze at all.
        assert_eq!(freezes(&stalls, 3), Vec::new());
        assert_eq!(freezes(&[], 2), Vec::new());
        let freeze = freezes(&stalls, 2)[0];
        assert_eq!(freeze.overlap(ms(120), ms(150)), Duration::from_millis(20));
        assert_eq!(freeze.overlap(ms(170), ms(200)), Duration::ZERO);
    }

    #[test]
    fn only_a_wake_up_over_the_threshold_late_is_a_stall() {
        let due = Instant::now();
        assert_eq!(stall(1, due, due + Duration::from_millis(3)), None);
        assert_eq!(stall(1, due, due + STALL), None);
        let late = Duration::from_millis(158);
        assert_eq!(
            stall(1, due, due + late),
            Some(Stall {
                cpu: 1,
                from: due,
                late
            })
        );
    }

    #[test]
    fn one_thread_watches_each_cpu_until_stopped() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let watch = StallWatch::start().unwrap();
        assert_eq!(watch.threads.len(), cpus);
        std::thread::sleep(Duration::from_millis(20));
        let stalls = watch.finish();
        assert!(
            stalls
                .iter()
                .all(|s| s.cpu < CpuSet::count() && s.late > STALL)
        );
        assert!(stalls.windows(2).all(|w| w[0].from <= w[1].from));
    }
}
