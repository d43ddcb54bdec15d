//! What the demo's call record must show for the demo to pass: the record of a healthy call.
//! It completed; its transcript is the prompt, the caller's digit and the agent's confirmation;
//! its result is the confirmation the agent's `returns` asks for; and its media statistics are
//! those of a clean line — packets all through the talk time, at most 1 % lost, interarrival
//! jitter (RFC 3550 §6.4.1) under 30 ms.

use serde_json::{Value, json};

/// The most loss a clean loopback line may show, as a fraction of the packets expected.
const MAX_LOSS: f64 = 0.01;
/// The most interarrival jitter a clean loopback line may show.
const MAX_JITTER_MS: f64 = 30.0;
/// Of the 20 ms packets the talk time could hold, the share that must have come in: the callee
/// streams for the whole call.
const MIN_STREAMED: f64 = 0.9;

/// Every way `record` falls short of the demo call's, one line each; empty when it is right.
/// `instructions` is what the agent was told to say first.
pub(crate) fn shortcomings(record: &Value, instructions: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    if record["status"] != "completed" {
        wrong.push(format!("the call did not complete: {}", record["status"]));
    }
    if record["result"] != json!({"digits": "1"}) {
        wrong.push(format!(
            "the result is not the confirmation: {}",
            record["result"]
        ));
    }
    let lines: Vec<(&str, &str)> = record["transcript"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| {
                    (
                        l["role"].as_str().unwrap_or_default(),
                        l["text"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let transcript_ok = matches!(
        lines.as_slice(),
        [("agent", prompt), ("caller", "DTMF 1"), ("agent", confirmation)]
            if *prompt == instructions && !confirmation.is_empty()
    );
    if !transcript_ok {
        wrong.push(format!(
            "the transcript is not prompt, DTMF 1, confirmation: {lines:?}"
        ));
    }
    let media = &record["media_stats"];
    let packets = media["packets_in"].as_u64().unwrap_or_default();
    let lost = media["lost"].as_u64().unwrap_or_default();
    let loss = lost as f64 / (packets + lost).max(1) as f64;
    if loss > MAX_LOSS {
        wrong.push(format!(
            "{lost} of {} packets lost ({:.1} %, more than {:.0} %)",
            packets + lost,
            loss * 100.0,
            MAX_LOSS * 100.0
        ));
    }
    let jitter = media["jitter_ms"].as_f64().unwrap_or(f64::INFINITY);
    if jitter >= MAX_JITTER_MS {
        wrong.push(format!(
            "interarrival jitter {jitter:.1} ms, not under {MAX_JITTER_MS} ms"
        ));
    }
    let talked_ms = record["talk_duration_ms"].as_u64().unwrap_or_default();
    let frames = talked_ms as f64 / 20.0;
    if (packets as f64) < MIN_STREAMED * frames {
        wrong.push(format!(
            "{packets} packets in over {talked_ms} ms of talk: the callee's stream did not run \
             all through the call"
        ));
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "Press 1 to confirm.";

    fn healthy() -> Value {
        json!({
            "status": "completed",
            "result": {"digits": "1"},
            "transcript": [
                {"role": "agent", "text": PROMPT, "at": "t"},
                {"role": "caller", "text": "DTMF 1", "at": "t"},
                {"role": "agent", "text": "You entered 1. Thank you, goodbye.", "at": "t"},
            ],
            "talk_duration_ms": 9400,
            "media_stats": {"packets_in": 472, "lost": 0, "jitter_ms": 0.4},
        })
    }

    #[test]
    fn a_healthy_call_passes() {
        assert_eq!(shortcomings(&healthy(), PROMPT), Vec::<String>::new());
    }

    #[test]
    fn the_record_of_a_replayed_capture_fails_on_its_media() {
        // What the demo printed while its callee sent RTP only while pressing keys.
        let mut record = healthy();
        record["media_stats"] = json!({"packets_in": 20, "lost": 440, "jitter_ms": 347.3});
        let wrong = shortcomings(&record, PROMPT);
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert!(wrong[0].contains("440 of 460 packets lost"), "{wrong:?}");
        assert!(wrong[1].contains("347.3 ms"), "{wrong:?}");
        assert!(wrong[2].contains("did not run all through"), "{wrong:?}");
    }

    #[test]
    fn the_edges_of_loss_and_jitter() {
        let mut record = healthy();
        record["media_stats"] = json!({"packets_in": 495, "lost": 5, "jitter_ms": 29.9});
        assert!(shortcomings(&record, PROMPT).is_empty());
        record["media_stats"] = json!({"packets_in": 494, "lost": 6, "jitter_ms": 30.0});
        assert_eq!(shortcomings(&record, PROMPT).len(), 2);
        record["media_stats"] = json!({"packets_in": 500});
        assert_eq!(
            shortcomings(&record, PROMPT),
            ["interarrival jitter inf ms, not under 30 ms"],
            "a record without jitter is no healthy call's"
        );
    }

    #[test]
    fn the_call_status_result_and_transcript_are_checked() {
        let mut record = healthy();
        record["status"] = json!("failed");
        record["result"] = Value::Null;
        record["transcript"][1]["text"] = json!("DTMF 2");
        let wrong = shortcomings(&record, PROMPT);
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert!(shortcomings(&healthy(), "another prompt")[0].contains("transcript"));
    }
}
