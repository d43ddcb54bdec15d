//! The SIPp reference: SIPp's built-in UAC (`-sn uac`) against its built-in UAS (`-sn uas`) on
//! loopback, at a rate, for a number of calls, each held a given time, without media. The CPU
//! of both ends (from `/proc`) is what the simplest correct call setup costs on this machine;
//! the capacity bench divides the daemon's cost by it, and the call setup bench
//! ([`crate::cps`]) runs it at each of its rates. Needs `sipp` on the PATH (Debian package
//! `sip-tester`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::free_port;
use crate::{LoadgenError, process_usage};

/// What one SIPp run cost and whether it kept up.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SippFigures {
    /// CPU seconds of both ends.
    pub cpu_seconds: f64,
    /// The same per call, ms.
    pub cpu_ms_per_call: f64,
    /// From the UAC's start to its exit.
    pub elapsed_seconds: f64,
    /// Whether the UAC exited saying every call succeeded.
    pub all_succeeded: bool,
}

/// Runs SIPp's UAC against its UAS: `calls` calls at `rate` per second, each held `hold`;
/// `ticks` is [`crate::clock_ticks`].
pub fn reference(
    calls: u64,
    rate: f64,
    hold: Duration,
    ticks: f64,
) -> Result<SippFigures, LoadgenError> {
    let (uas_port, uac_port) = (free_port()?, free_port()?);
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    let mut uas = Command::new("sipp");
    uas.args([
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        &uas_port.to_string(),
        "-nostdin",
    ]);
    quiet(&mut uas);
    let mut uas = uas.spawn().map_err(LoadgenError::io(
        "starting SIPp (Debian package sip-tester)",
    ))?;
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let rate = rate.max(1.0);
    let mut uac = Command::new("sipp");
    uac.args([
        "-sn",
        "uac",
        &format!("127.0.0.1:{uas_port}"),
        "-i",
        "127.0.0.1",
        "-p",
        &uac_port.to_string(),
        "-r",
        &format!("{}", rate.round() as u64),
        "-m",
        &calls.to_string(),
        "-l",
        &calls.to_string(),
        "-d",
        &hold.as_millis().to_string(),
        "-nostdin",
        "-timeout",
        &(calls as f64 / rate + hold.as_secs_f64() * 2.0 + 30.0)
            .round()
            .to_string(),
    ]);
    quiet(&mut uac);
    let mut uac = match uac.spawn() {
        Ok(uac) => uac,
        Err(error) => {
            let _ = uas.kill();
            let _ = uas.wait();
            return Err(LoadgenError::io("starting SIPp's UAC")(error));
        }
    };
    let (uas_pid, uac_pid) = (uas.id(), uac.id());
    // /proc goes away with the process: keep the last reading.
    let (mut uas_cpu, mut uac_cpu) = (0.0, 0.0);
    let status = loop {
        if let Some((cpu, _)) = process_usage(uas_pid, ticks) {
            uas_cpu = cpu;
        }
        if let Some((cpu, _)) = process_usage(uac_pid, ticks) {
            uac_cpu = cpu;
        }
        match uac.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => break Err(LoadgenError::io("waiting for SIPp's UAC")(error)),
        }
    };
    if let Some((cpu, _)) = process_usage(uas_pid, ticks) {
        uas_cpu = cpu;
    }
    let _ = uas.kill();
    let _ = uas.wait();
    let status = status?;
    let cpu_seconds = uas_cpu + uac_cpu;
    Ok(SippFigures {
        cpu_seconds,
        cpu_ms_per_call: cpu_seconds * 1000.0 / calls.max(1) as f64,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        all_succeeded: status.success(),
    })
}
