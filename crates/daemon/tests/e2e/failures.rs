//! Trunks that fail, end to end: the call record says what happened. A trunk at a closed port
//! (UDP: the kernel's ICMP port unreachable; TCP: a refused connection) fails the call at once
//! as `trunk_unreachable`, well before the ring timeout; a trunk that never answers fails by
//! Timer B as `trunk_timeout`, even with a ring timeout shorter than Timer B — it never rang.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Api, assert_ended, wait_final, world, world_on};

/// Points the world's trunk at `port` over `transport`.
async fn trunk_at(api: &Api, port: u16, transport: &str) {
    let (_, trunks) = api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, t) = api
        .patch(&trunk, json!({"port": port, "transport": transport}))
        .await;
    assert_eq!(s, 200, "{t}");
}

/// A port on 127.0.0.1 nothing is bound to, for UDP and for TCP.
fn closed_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The call's record once it ended, which must be within `limit`.
async fn ended_within(api: &Api, id: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (_, c) = api.get(&format!("/v1/calls/{id}")).await;
        if c["ended_at"].is_string() {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "call {id} did not end within {limit:?}: {c:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_at_a_closed_port_fails_the_call_at_once_as_trunk_unreachable() {
    // A 60 s ring timeout and the default T1 (Timer B after 32 s): ending within 10 s is
    // neither of them.
    let w = world(None, &[]).await;
    w.set_agent(json!({"ring_timeout_seconds": 60})).await;
    for transport in ["udp", "tcp"] {
        trunk_at(&w.api, closed_port(), transport).await;
        let id = w.dispatch(json!({})).await;
        let record = ended_within(&w.api, &id, Duration::from_secs(10)).await;
        assert_ended(&record, "failed", "trunk_unreachable", "trunk");
        assert!(record["end_reason"]["sip_status"].is_null(), "{record:#}");
        assert_eq!(
            record["end_reason"]["message"],
            "no trunk target could be reached (connection refused or ICMP unreachable)"
        );
        assert!(record["dialed_at"].is_string(), "{transport}: {record:#}");
        assert!(record["ringing_at"].is_null(), "{transport}: {record:#}");
        assert!(record["answered_by"].is_null(), "{transport}: {record:#}");
    }
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_trunk_ends_by_timer_b_as_trunk_timeout_not_no_answer() {
    // T1 = 50 ms: Timer B after 64·T1 = 3.2 s, past the 1 s ring timeout, which never starts:
    // no provisional response said the phone rings.
    let w = world_on(|c| c.sip_t1 = Duration::from_millis(50), None, &[]).await;
    w.set_agent(json!({"ring_timeout_seconds": 1})).await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "failed", "trunk_timeout", "trunk");
    assert!(record["end_reason"]["sip_status"].is_null(), "{record:#}");
    assert!(record["ringing_at"].is_null(), "{record:#}");
    w.finish().await;
}
