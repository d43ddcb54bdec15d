//! A watch for stalls of the machine's CPUs, so a bench can tell them from Dialtone's own.
//!
//! On a virtual machine the hypervisor can stop a vCPU for tens of milliseconds; every thread
//! on it stops too, and the calls a media worker there serves all see a gap, whatever the
//! daemon does; a stop of 10 ms is enough to push a worker's calls over the 30 ms a gap is
//! counted at. One thread pinned to each CPU sleeps 2 ms at a time and notes each time it woke
//! more than [`STALL`] late. It runs under `SCHED_FIFO` one priority above the media
//! workers (where permitted), so no thread of the machine — not even a media worker's long
//! tick — can hold it up: only the kernel or the hypervisor.

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

#[cfg(test)]
mod tests {
    use super::*;

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
