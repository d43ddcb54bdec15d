#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Audio over an impaired real wire: two network namespaces this test creates, joined by a veth
//! pair. In one, our media engine (this test binary, re-run in the `probe` role) sends a tone
//! to a reflector in the other (the `reflector` role) and listens to it coming back. The wire
//! is impaired with `tc netem` (delay, jitter, loss) where the kernel has it; where it does not,
//! the reflector applies the same seeded model in user space. The audio must stay continuous.
//! Creating namespaces needs CAP_SYS_ADMIN and `ip`, which a machine may lack, so the test is
//! ignored by default; scripts/test.sh runs it with `--ignored` where namespaces can be created.
//! Run, it fails if they cannot.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use dialtone_media::ring::RING_FRAMES;
use dialtone_media::{AudioFrame, FRAME_SAMPLES, MediaCodec, MediaConfig, MediaEngine, PortPool};
use dialtone_test_support::audio::{sine, tone_amplitude};
use dialtone_test_support::impair::{Impairment, reflect};

const AMPLITUDE: f64 = 8000.0;
const SECONDS: u64 = 8;

/// Runs `ip` with `args`; the error output when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Two namespaces and the veth pair between them, removed when dropped.
struct Wire {
    near: String,
    far: String,
}

impl Wire {
    fn create() -> Result<Wire, String> {
        let id = std::process::id() % 100_000;
        let wire = Wire {
            near: format!("dt-near-{id}"),
            far: format!("dt-far-{id}"),
        };
        ip(&["netns", "add", &wire.near])?;
        ip(&["netns", "add", &wire.far])?;
        let (a, b) = (format!("dtn{id}"), format!("dtf{id}"));
        ip(&[
            "link", "add", &a, "netns", &wire.near, "type", "veth", "peer", "name", &b, "netns",
            &wire.far,
        ])?;
        for (ns, dev, addr) in [
            (&wire.near, &a, "10.213.0.1/30"),
            (&wire.far, &b, "10.213.0.2/30"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(wire)
    }

    /// Applies netem on both ends; false when the kernel has no netem.
    fn netem(&self, id: u32) -> bool {
        [
            (&self.near, format!("dtn{id}")),
            (&self.far, format!("dtf{id}")),
        ]
        .iter()
        .all(|(ns, dev)| {
            Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                ])
                .args(["netem", "delay", "20ms", "15ms", "loss", "3%"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    /// Runs this test binary's `role` test inside namespace `ns`.
    fn run(&self, ns: &str, role: &str, env: &[(&str, String)]) -> std::process::Child {
        let exe = std::env::current_exe().unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(exe)
            .args([
                "--exact",
                "audio_stays_continuous_over_an_impaired_wire_between_namespaces",
                "--ignored",
                "--nocapture",
            ])
            .env("DIALTONE_NETNS_ROLE", role);
        for (k, v) in env {
            command.env(k, v);
        }
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.near]);
        let _ = ip(&["netns", "del", &self.far]);
    }
}

#[test]
#[ignore = "needs network namespaces (CAP_SYS_ADMIN); scripts/test.sh runs them where they can"]
fn audio_stays_continuous_over_an_impaired_wire_between_namespaces() {
    if let Ok(role) = std::env::var("DIALTONE_NETNS_ROLE") {
        netns_role(&role);
        return;
    }
    let wire = Wire::create()
        .unwrap_or_else(|reason| panic!("network namespaces cannot be created here: {reason}"));
    let id = std::process::id() % 100_000;
    let netem = wire.netem(id);
    if !netem {
        println!("tc netem is not available in this kernel: the reflector impairs the wire");
    }
    let reflector = wire.run(
        &wire.far,
        "reflector",
        &[("DIALTONE_NETNS_IMPAIR", (!netem).to_string())],
    );
    // The reflector binds before the probe's first packet is due (the probe waits for it).
    let probe = wire.run(&wire.near, "probe", &[]);
    let out = probe.wait_with_output().unwrap();
    let reflected = reflector.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .unwrap_or_else(|| {
            panic!(
                "probe said:\n{stdout}\n{}\nreflector said:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&reflected.stdout),
                String::from_utf8_lossy(&reflected.stderr)
            )
        });
    let figures: Vec<f64> = result
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let [frames, silent, concealed, lost, buffer_ms, amplitude] = figures[..] else {
        panic!("{result}");
    };
    println!(
        "{frames} frames, {silent} silent, {concealed} concealed, {lost} lost, buffer {buffer_ms} ms, tone {amplitude:.0}"
    );
    // Continuous: a frame on (nearly) every tick after start-up, few of them silent holes.
    assert!(frames >= (SECONDS - 2) as f64 * 50.0 * 0.95, "{result}");
    assert!(silent <= frames * 0.03, "{result}");
    // The wire really was impaired, and what was lost was concealed.
    assert!(lost >= 5.0 && concealed >= lost * 0.5, "{result}");
    // The buffer grew for the jitter and stayed within its maximum.
    assert!((40.0..=300.0).contains(&buffer_ms), "{result}");
    assert!(amplitude > AMPLITUDE * 0.7, "{result}");
}

/// The roles the test plays inside the namespaces, re-run there with `DIALTONE_NETNS_ROLE`.
fn netns_role(role: &str) {
    let far: SocketAddr = "10.213.0.2:40000".parse().unwrap();
    match role {
        "reflector" => {
            let impair = std::env::var("DIALTONE_NETNS_IMPAIR").as_deref() == Ok("true");
            let model = if impair {
                Impairment {
                    delay: Duration::from_millis(40),
                    jitter: Duration::from_millis(30),
                    loss: 0.05,
                    burst: 0.3,
                    seed: 42,
                }
            } else {
                Impairment::none()
            };
            let stats = reflect(far, model, Duration::from_secs(SECONDS + 2)).unwrap();
            println!("REFLECTED {stats:?}");
        }
        "probe" => probe(far),
        _ => panic!("DIALTONE_NETNS_ROLE={role}: not a role"),
    }
}

fn probe(far: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Give the reflector a moment to bind in its namespace.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let engine = MediaEngine::new(1).unwrap();
        let pool = PortPool::new("10.213.0.1".parse().unwrap(), 30000, 30099);
        let mut call = engine
            .start(
                pool.bind().unwrap(),
                MediaConfig {
                    telephone_event: None,
                    ..MediaConfig::new(MediaCodec::Pcmu, 0, Some(far), 77)
                },
            )
            .unwrap();
        let mut outbound = call.take_outbound().unwrap();
        let mut inbound = call.take_inbound().unwrap();
        let start = Instant::now();
        let mut index = 0usize;
        let mut heard: Vec<AudioFrame> = Vec::new();
        while start.elapsed() < Duration::from_secs(SECONDS - 1) {
            while outbound.free() > RING_FRAMES - 5 {
                let mut frame = AudioFrame::silence(Instant::now());
                sine(
                    8000 * 2,
                    1000.0,
                    AMPLITUDE,
                    index * FRAME_SAMPLES,
                    &mut frame.samples,
                );
                index += 1;
                let _ = outbound.try_send(frame);
            }
            while let Some(frame) = inbound.try_recv() {
                heard.push(frame);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = call.stop().await;
        // Skip the first second (start-up, the buffer settling).
        let settled = &heard[heard.len().min(50)..];
        let silent = settled
            .iter()
            .filter(|f| f.samples.iter().all(|s| *s == 0))
            .count();
        let last: Vec<i16> = settled
            .iter()
            .rev()
            .take(50)
            .flat_map(|f| f.samples)
            .collect();
        println!(
            "PROBE {} {} {} {} {} {:.0}",
            settled.len(),
            silent,
            stats.concealed_frames,
            stats.lost,
            stats.jitter_buffer_ms,
            tone_amplitude(&last, 16000, 1000.0)
        );
    });
}
