//! The capacity bench in small: a real daemon (`builtin:echo`, G.711) on loopback, the trunk
//! simulator as its trunk, a few dozen calls dispatched over gRPC. It keeps the bench working;
//! speed is measured by the bench itself, not asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use dialtone_daemon::{Config, Daemon};
use dialtone_loadgen::callee::{CalleeConfig, OutcomeMix};
use dialtone_loadgen::load::{self, Control, LoadPlan};
use dialtone_loadgen::sim::Simulator;
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
) -> (Daemon, Simulator, Control, String) {
    let d = daemon(dir, rtp).await;
    let sim = Simulator::start(callee(mix, hold), sim_ports)
        .await
        .unwrap();
    let control = Control::connect(&format!("http://{}", d.grpc_addr), KEY)
        .await
        .unwrap();
    let agent_id = control
        .set_up_agent(sim.sip_addr, "builtin:echo")
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
