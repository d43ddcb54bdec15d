//! The capacity bench in small: a real daemon (`builtin:echo`, G.711) on loopback, the trunk
//! simulator as its trunk, a few dozen calls dispatched over gRPC; and a few `builtin:agent`
//! calls against the scripted responder. It keeps the bench working; speed is measured by the
//! bench itself, not asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use dialtone_daemon::{Config, Daemon};
use dialtone_loadgen::callee::{CalleeConfig, OutcomeMix};
use dialtone_loadgen::load::{self, Control, LoadPlan};
use dialtone_loadgen::plot::{self, TimelineSample};
use dialtone_loadgen::scripted::ScriptedProvider;
use dialtone_loadgen::sim::Simulator;
use dialtone_loadgen::voice::{VoiceScript, read_wav};
use dialtone_sdp::AudioCodec;
use dialtone_sip_core::TimerConfig;

const KEY: &str = "loadgen-key";

async fn daemon(dir: &std::path::Path, rtp: &str) -> Daemon {
    let database_url = format!("sqlite://{}", dir.join("loadgen.db").display());
    let env = |key: &str| {
        let value = match key {
            "DIALTONE_HTTP_ADDR" | "DIALTONE_GRPC_ADDR" | "DIALTONE_SIP_ADDR" => "127.0.0.1:0",
            "DIALTONE_DATABASE_URL" => &database_url,
            "DIALTONE_RTP_PORTS" => rtp,
            "DIALTONE_API_KEY" => KEY,
            "DIALTONE_WEBHOOK_SECRET" => "whsec",
            "DIALTONE_MEDIA_WORKERS" => "1",
            // The scripted responder of the builtin:agent calls.
            "DIALTONE_PRIVATE_DESTINATIONS" => "127.0.0.1",
            _ => return None,
        };
        Some(value.to_owned())
    };
    Daemon::start(Config::load_from(None, &env).unwrap())
        .await
        .unwrap()
}

fn callee(mix: OutcomeMix, hold: Duration) -> CalleeConfig {
    CalleeConfig {
        sip_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        media_ip: [127, 0, 0, 1].into(),
        codecs: vec![AudioCodec::Pcmu],
        mix,
        answer_delay: Duration::from_millis(100),
        hold: Some(hold),
        timers: TimerConfig::default(),
    }
}

/// A daemon with its RTP on `rtp`, the simulator (`mix`, calls held `hold`) on `sim_ports`,
/// and an echo agent calling through it.
async fn bench(
    dir: &std::path::Path,
    rtp: &str,
    sim_ports: (u16, u16),
    mix: OutcomeMix,
    hold: Duration,
    script: VoiceScript,
) -> (Daemon, Simulator, Control, String) {
    let d = daemon(dir, rtp).await;
    let sim = Simulator::start(callee(mix, hold), sim_ports, script, 1)
        .await
        .unwrap();
    let control = Control::connect(&format!("http://{}", d.grpc_addr), KEY)
        .await
        .unwrap();
    let agent_id = control
        .set_up_agent(sim.sip_addr, "builtin:echo", None)
        .await
        .unwrap();
    (d, sim, control, agent_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_echo_calls_complete_and_every_caller_hears_itself_back() {
    let dir = tempfile::tempdir().unwrap();
    let (d, sim, control, agent_id) = bench(
        dir.path(),
        "12000-12199",
        (12400, 12599),
        OutcomeMix::ALL_ANSWERED,
        Duration::from_secs(4),
        VoiceScript::default(),
    )
    .await;
    let plan = LoadPlan {
        agent_id,
        to: "+15551230000".into(),
        calls: 30,
        rate: 10.0,
        max_concurrency: 20,
        deadline: Duration::from_secs(90),
        progress: false,
        watch_cpu: None,
        webhook_url: None,
    };
    let (report, records) = load::run(&control, sim, &plan).await.unwrap();
    println!("{}", report.markdown());
    assert_eq!(report.dispatch.dispatched, 30, "{report:#?}");
    assert_eq!(
        report.dispatch.statuses.get("completed"),
        Some(&30),
        "{report:#?}"
    );
    assert_eq!(report.dispatch.dispatch_to_invite_ms.count, 30);
    assert!(report.dispatch.max_concurrent >= 10, "{report:#?}");
    assert_eq!(records.len(), 30);
    for r in &records {
        assert!(r.answered, "{r:?}");
        assert_eq!(r.ended_by.as_deref(), Some("callee"), "{r:?}");
        let m = r
            .measure
            .as_ref()
            .expect("every answered call was measured");
        // Four seconds of audio each way, and the echo of the first talkspurt came back.
        assert!(m.packets_in >= 150 && m.packets_out >= 150, "{r:?}");
        assert!(
            m.answered_talkspurts >= 1,
            "the echo did not come back: {r:?}"
        );
        assert_eq!(m.malformed, 0);
    }
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_failing_callees_give_their_statuses_in_the_mix() {
    let dir = tempfile::tempdir().unwrap();
    let mix = OutcomeMix {
        answer: 2,
        busy: 1,
        fail: 1,
        no_answer: 0,
    };
    let (d, sim, control, agent_id) = bench(
        dir.path(),
        "12200-12299",
        (12600, 12699),
        mix,
        Duration::from_secs(1),
        VoiceScript::default(),
    )
    .await;
    let plan = LoadPlan {
        agent_id,
        to: "+15551230000".into(),
        calls: 8,
        rate: 20.0,
        max_concurrency: 8,
        deadline: Duration::from_secs(60),
        progress: false,
        watch_cpu: None,
        webhook_url: None,
    };
    let (report, _) = load::run(&control, sim, &plan).await.unwrap();
    let s = &report.dispatch.statuses;
    assert_eq!(s.get("completed"), Some(&4), "{s:?}");
    assert_eq!(s.get("busy"), Some(&2), "{s:?}");
    assert_eq!(s.get("failed"), Some(&2), "{s:?}");
    assert!(
        !report.within_budget(),
        "failed calls are outside the budget"
    );
    assert!(
        report.failures[0].contains("did not complete"),
        "{:?}",
        report.failures
    );
    d.shutdown(Duration::from_secs(1)).await;
}

/// Callees that speak a recording (espeak-ng, as a 16 kHz WAV) and press digits: every digit
/// reaches Dialtone as RFC 4733, every talkspurt of the recording is echoed, and the bench's
/// plots draw from the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callees_speak_a_recording_and_press_digits_that_dialtone_hears() {
    let dir = tempfile::tempdir().unwrap();
    let ulaw = dialtone_test_support::media::speech_ulaw(
        dir.path(),
        "Hello, this is a recorded caller, speaking for the load test.",
    )
    .unwrap();
    let wav = dir.path().join("caller.wav");
    dialtone_test_support::media::ulaw_to_wav(&ulaw, 16000, &wav).unwrap();
    let source = read_wav(&wav).unwrap();
    // 16 kHz read back as 8 kHz: half the samples, and the speech is there.
    assert!(
        source.len().abs_diff(ulaw.len()) < 400,
        "{} vs {}",
        source.len(),
        ulaw.len()
    );
    assert!(source.iter().any(|s| s.unsigned_abs() > 3000));
    let script = VoiceScript {
        source: Some(source.into()),
        digits: "12#".into(),
    };
    let (d, sim, control, agent_id) = bench(
        dir.path(),
        "12300-12399",
        (12700, 12799),
        OutcomeMix::ALL_ANSWERED,
        Duration::from_secs(4),
        script,
    )
    .await;
    let plan = LoadPlan {
        agent_id,
        to: "+15551230000".into(),
        calls: 6,
        rate: 10.0,
        max_concurrency: 6,
        deadline: Duration::from_secs(60),
        progress: false,
        watch_cpu: None,
        webhook_url: None,
    };
    let (report, records) = load::run(&control, sim, &plan).await.unwrap();
    println!("{}", report.markdown());
    assert_eq!(
        report.dispatch.statuses.get("completed"),
        Some(&6),
        "{report:#?}"
    );
    assert_eq!(report.media.digits_sent, 18, "{report:#?}");
    assert_eq!(report.dispatch.dtmf_digits_heard, 18, "{report:#?}");
    for r in &records {
        let m = r.measure.as_ref().unwrap();
        assert!(
            m.answered_talkspurts >= 1,
            "the recording was not echoed: {r:?}"
        );
    }
    let latency = dir.path().join("latency.png");
    plot::latencies(&latency, &[(6, &report)]).unwrap();
    let timeline = dir.path().join("timeline.png");
    let samples: Vec<TimelineSample> = (0..10u32)
        .map(|i| TimelineSample {
            t_s: f64::from(i) * 0.5,
            live_calls: u64::from(i.min(6)),
            daemon_cpu_percent: 5.0 * f64::from(i),
            daemon_rss_kib: 30_000,
        })
        .collect();
    plot::timeline(&timeline, "smoke", &samples).unwrap();
    for png in [latency, timeline] {
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
        assert!(
            bytes.len() > 10_000,
            "{} is {} bytes",
            png.display(),
            bytes.len()
        );
    }
    d.shutdown(Duration::from_secs(1)).await;
}

/// `builtin:agent` against the scripted responder: each callee's talkspurt is a turn (it is
/// transcribed, answered and spoken back after the endpointing silence), and the next
/// talkspurt starts while the agent still speaks, cutting it (barge-in); both are timed on
/// the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_calls_take_turns_and_are_barged_in_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), "12800-12899").await;
    let sim = Simulator::start(
        callee(OutcomeMix::ALL_ANSWERED, Duration::from_secs(8)),
        (12900, 12999),
        VoiceScript::default(),
        1,
    )
    .await
    .unwrap();
    let control = Control::connect(&format!("http://{}", d.grpc_addr), KEY)
        .await
        .unwrap();
    let scripted = ScriptedProvider::start().await.unwrap();
    control
        .create_openai_provider("scripted", &scripted.base_url())
        .await
        .unwrap();
    let agent_id = control
        .set_up_agent(sim.sip_addr, load::BUILTIN_AGENT, Some("scripted"))
        .await
        .unwrap();
    let plan = LoadPlan {
        agent_id,
        to: "+15551230000".into(),
        calls: 4,
        rate: 4.0,
        max_concurrency: 4,
        deadline: Duration::from_secs(60),
        progress: false,
        watch_cpu: None,
        webhook_url: None,
    };
    let (report, records) = load::run(&control, sim, &plan).await.unwrap();
    println!("{}", report.markdown());
    println!("{:?}", scripted.requests());
    assert_eq!(
        report.dispatch.statuses.get("completed"),
        Some(&4),
        "{report:#?}"
    );
    let endpointing = load::ENDPOINTING.as_secs_f64() * 1000.0;
    for r in &records {
        let m = r
            .measure
            .as_ref()
            .expect("every answered call was measured");
        // Talkspurts end at 1.2 s and 4.7 s and start over the agent at 3.5 s and 7 s.
        assert!(m.turn_ms.len() >= 2, "{m:?}");
        assert!(
            m.turn_ms
                .iter()
                .all(|t| *t > endpointing - 100.0 && *t < 2300.0),
            "{m:?}"
        );
        assert!(!m.barge_in_ms.is_empty(), "{m:?}");
        assert!(m.barge_in_ms.iter().all(|t| *t < 1200.0), "{m:?}");
        assert_eq!(m.barge_ins_missed, 0, "{m:?}");
    }
    let requests = scripted.requests();
    assert!(requests.transcriptions >= 8, "{requests:?}");
    assert!(requests.speech >= 8, "{requests:?}");
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_names_the_webhook_sink_and_its_signed_events_arrive() {
    use dialtone_loadgen::cps::{RateRun, WEBHOOK_WAIT};
    use dialtone_loadgen::webhook_sink::WebhookSink;
    let dir = tempfile::tempdir().unwrap();
    let (d, sim, control, agent_id) = bench(
        dir.path(),
        "13000-13099",
        (13100, 13199),
        OutcomeMix::ALL_ANSWERED,
        Duration::from_secs(1),
        VoiceScript::default(),
    )
    .await;
    let sink = WebhookSink::start().await.unwrap();
    let plan = LoadPlan {
        agent_id,
        to: "+15551230000".into(),
        calls: 10,
        rate: 20.0,
        max_concurrency: 10,
        deadline: Duration::from_secs(60),
        progress: false,
        watch_cpu: None,
        webhook_url: Some(sink.url("smoke")),
    };
    let (report, _) = load::run(&control, sim, &plan).await.unwrap();
    let tally = sink.wait("smoke", 10, WEBHOOK_WAIT).await;
    assert_eq!(tally.missing, 0, "{tally:?}");
    assert_eq!(tally.unsigned, 0, "{tally:?}");
    assert_eq!(tally.calls, 10, "{tally:?}");
    // queued, dialing, ringing, answered, ended.
    assert_eq!(tally.events_per_call, [(5, 10)].into(), "{tally:?}");
    // The daemon answers the 200 with its ACK at once: the 100 ms answer delay is left out.
    let ack = report.dispatch.invite_to_ack_ms;
    assert_eq!(ack.count, 10, "{report:#?}");
    assert!(ack.p50 < 100.0, "{ack:?}");
    let run = RateRun::new(20, &report, 0.1, 0.1, Some(tally));
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(run.completed, 10);
    let png = dir.path().join("cps.png");
    let points = vec![(run.achieved_rate, run.dispatch_to_invite_ms)];
    plot::setup_latency(&png, &[("current", points)], Some(15)).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    d.shutdown(Duration::from_secs(1)).await;
}
