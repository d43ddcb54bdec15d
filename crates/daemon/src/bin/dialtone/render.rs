//! What the CLI prints: the API's objects as JSON (`--json`, and the source of the tables), and
//! human-readable tables and records.

// Indexing a serde_json::Value by key yields Null when the key is absent: it cannot panic.
#![allow(clippy::indexing_slicing)]

use dialtone_control::proto;
use dialtone_proto::json::{from_struct, from_value};
use serde_json::{Map, Value, json};

/// A status's API name (`CALL_STATUS_IN_PROGRESS` → `in_progress`).
pub(crate) fn status_name(status: i32) -> String {
    proto::CallStatus::try_from(status)
        .unwrap_or(proto::CallStatus::Unspecified)
        .as_str_name()
        .trim_start_matches("CALL_STATUS_")
        .to_ascii_lowercase()
}

/// An API status name as the proto enum.
pub(crate) fn status_of(name: &str) -> Option<proto::CallStatus> {
    proto::CallStatus::from_str_name(&format!("CALL_STATUS_{}", name.to_ascii_uppercase()))
        .filter(|s| *s != proto::CallStatus::Unspecified)
}

fn put(o: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    let value = value.into();
    if !value.is_null() {
        o.insert(key.to_owned(), value);
    }
}

pub(crate) fn trunk(t: &proto::Trunk) -> Value {
    let mut o = Map::new();
    put(&mut o, "id", t.id.clone());
    put(&mut o, "name", t.name.clone());
    put(&mut o, "host", t.host.clone());
    put(&mut o, "port", t.port);
    let transport = match proto::TrunkTransport::try_from(t.transport) {
        Ok(proto::TrunkTransport::Tcp) => "tcp",
        Ok(proto::TrunkTransport::Tls) => "tls",
        _ => "udp",
    };
    put(&mut o, "transport", transport);
    put(&mut o, "username", t.username.clone());
    put(&mut o, "realm", t.realm.clone());
    put(&mut o, "from_domain", t.from_domain.clone());
    put(&mut o, "max_concurrent_calls", t.max_concurrent_calls);
    put(&mut o, "max_calls_per_second", t.max_calls_per_second);
    put(&mut o, "has_password", t.has_password);
    put(&mut o, "register", t.register);
    put(&mut o, "registration_state", t.registration_state.clone());
    put(&mut o, "inbound_cidrs", t.inbound_cidrs.clone());
    put(&mut o, "tls_verify", t.tls_verify);
    put(&mut o, "has_tls_ca", t.tls_ca_pem.is_some());
    put(&mut o, "has_tls_client_key", t.has_tls_client_key);
    let srtp = match proto::SrtpMode::try_from(t.srtp) {
        Ok(proto::SrtpMode::Optional) => "optional",
        Ok(proto::SrtpMode::Required) => "required",
        _ => "off",
    };
    put(&mut o, "srtp", srtp);
    let codecs: Vec<&str> = t
        .codecs
        .iter()
        .filter_map(|c| match proto::Codec::try_from(*c) {
            Ok(proto::Codec::Opus) => Some("opus"),
            Ok(proto::Codec::G722) => Some("g722"),
            Ok(proto::Codec::Pcmu) => Some("pcmu"),
            Ok(proto::Codec::Pcma) => Some("pcma"),
            _ => None,
        })
        .collect();
    put(&mut o, "codecs", codecs);
    put(
        &mut o,
        "transfer_sip_domains",
        t.transfer_sip_domains.clone(),
    );
    put(&mut o, "created_at", t.created_at.clone());
    Value::Object(o)
}

/// A provider (its API key is never sent back, only whether one is set).
pub(crate) fn provider(p: &proto::Provider) -> Value {
    let kind = proto::ProviderKind::try_from(p.kind)
        .unwrap_or(proto::ProviderKind::Unspecified)
        .as_str_name()
        .trim_start_matches("PROVIDER_KIND_")
        .to_ascii_lowercase();
    json!({"id": p.id, "name": p.name, "kind": kind, "base_url": p.base_url,
           "has_api_key": p.has_api_key, "created_at": p.created_at})
}

pub(crate) fn number(n: &proto::Number) -> Value {
    json!({
        "id": n.id, "e164": n.e164, "trunk_id": n.trunk_id,
        "answering_agent_id": n.answering_agent_id, "created_at": n.created_at,
    })
}

pub(crate) fn agent(a: &proto::Agent) -> Value {
    let mut o = Map::new();
    put(&mut o, "id", a.id.clone());
    if let Some(f) = &a.fields {
        put(&mut o, "name", f.name.clone());
        put(&mut o, "direction", f.direction.clone());
        put(&mut o, "persona", f.persona.clone());
        put(&mut o, "voice", f.voice.clone());
        put(&mut o, "language", f.language.clone());
        put(&mut o, "instructions", f.instructions.clone());
        put(&mut o, "returns", f.returns.as_ref().map(from_struct));
        if !f.tools.is_empty() {
            let tools: Vec<Value> = f
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                           "parameters": t.parameters.as_ref().map(from_struct), "url": t.url})
                })
                .collect();
            put(&mut o, "tools", tools);
        }
        put(
            &mut o,
            "voicemail_action",
            f.voicemail_action
                .as_ref()
                .map(|v| json!({"action": v.action, "message": v.message})),
        );
        put(&mut o, "webhook_url", f.webhook_url.clone());
        put(&mut o, "number_ids", f.number_ids.clone());
        put(&mut o, "primary_number_id", f.primary_number_id.clone());
        put(&mut o, "brain", f.brain.clone());
        put(&mut o, "ring_timeout_seconds", f.ring_timeout_seconds);
        put(&mut o, "max_duration_seconds", f.max_duration_seconds);
        put(&mut o, "mask_dtmf", f.mask_dtmf);
        put(&mut o, "record", f.record.as_ref().map(from_value));
        put(&mut o, "amd", f.amd.as_ref().map(from_value));
        put(&mut o, "barge_in", f.barge_in.as_ref().map(from_value));
        put(&mut o, "endpointing_silence_ms", f.endpointing_silence_ms);
        put(&mut o, "silence_timeout_seconds", f.silence_timeout_seconds);
    }
    put(&mut o, "created_at", a.created_at.clone());
    Value::Object(o)
}

pub(crate) fn call(c: &proto::Call) -> Value {
    let mut o = Map::new();
    put(&mut o, "id", c.id.clone());
    put(&mut o, "agent_id", c.agent_id.clone());
    put(&mut o, "to", c.to.clone());
    put(&mut o, "from_number", c.from_number.clone());
    put(&mut o, "direction", c.direction.clone());
    put(&mut o, "status", status_name(c.status));
    put(
        &mut o,
        "end_reason",
        c.end_reason.as_ref().map(|r| {
            json!({"code": r.code, "by": r.by, "sip_status": r.sip_status, "message": r.message})
        }),
    );
    put(&mut o, "answered_by", c.answered_by.clone());
    put(
        &mut o,
        "answered_by_reason",
        c.answered_by_reason.as_ref().map(from_struct),
    );
    put(&mut o, "instructions", c.instructions.clone());
    put(&mut o, "context", c.context.as_ref().map(from_struct));
    put(&mut o, "metadata", c.metadata.as_ref().map(from_struct));
    put(&mut o, "webhook_url", c.webhook_url.clone());
    put(&mut o, "sip_call_id", c.sip_call_id.clone());
    put(&mut o, "trunk_id", c.trunk_id.clone());
    put(&mut o, "created_at", c.created_at.clone());
    put(&mut o, "dialed_at", c.dialed_at.clone());
    put(&mut o, "ringing_at", c.ringing_at.clone());
    put(&mut o, "answered_at", c.answered_at.clone());
    put(&mut o, "ended_at", c.ended_at.clone());
    put(&mut o, "ring_duration_ms", c.ring_duration_ms);
    put(&mut o, "talk_duration_ms", c.talk_duration_ms);
    let transcript: Vec<Value> = c
        .transcript
        .iter()
        .map(|l| json!({"role": l.role, "text": l.text, "at": l.at}))
        .collect();
    put(&mut o, "transcript", transcript);
    put(&mut o, "result", c.result.as_ref().map(from_value));
    put(&mut o, "result_error", c.result_error.clone());
    put(&mut o, "recording", c.recording.as_ref().map(from_struct));
    put(&mut o, "recording_error", c.recording_error.clone());
    put(
        &mut o,
        "media_stats",
        c.media_stats.as_ref().map(from_struct),
    );
    put(&mut o, "transferred_to", c.transferred_to.clone());
    put(
        &mut o,
        "transfer",
        c.transfer.as_ref().map(|t| {
            let mut transfer = json!({"to": t.to, "mode": t.mode, "status": t.status,
                "sip_status": t.sip_status, "reason": t.reason});
            if let (Some(leg), Some(o)) = (&t.bridge, transfer.as_object_mut()) {
                o.insert(
                    "bridge".into(),
                    json!({"sip_call_id": leg.sip_call_id, "answered_at": leg.answered_at,
                        "duration_ms": leg.duration_ms}),
                );
            }
            transfer
        }),
    );
    Value::Object(o)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows of objects as a table of `columns`.
pub(crate) fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|s| s.chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

/// One object as `key: value` lines (nested values as compact JSON).
pub(crate) fn record(v: &Value) -> String {
    let Some(o) = v.as_object() else {
        return cell(v);
    };
    let width = o.keys().map(String::len).max().unwrap_or_default();
    o.iter()
        .map(|(k, v)| format!("{k:<width$}  {}", cell(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A call's record as a person reads it: outcome, timing, transcript and result.
pub(crate) fn call_record(v: &Value) -> String {
    let mut out = vec![
        format!("call         {}", cell(&v["id"])),
        format!(
            "             {} → {} ({})",
            cell(&v["from_number"]),
            cell(&v["to"]),
            cell(&v["direction"])
        ),
        format!("status       {}", cell(&v["status"])),
    ];
    if v["end_reason"].is_object() {
        let r = &v["end_reason"];
        let sip = match &r["sip_status"] {
            Value::Null => String::new(),
            s => format!(", SIP {s}"),
        };
        out.push(format!(
            "end reason   {} (by {}{sip})",
            cell(&r["code"]),
            cell(&r["by"])
        ));
    }
    if v["transfer"].is_object() {
        let t = &v["transfer"];
        let sip = match &t["sip_status"] {
            Value::Null => String::new(),
            s => format!(", SIP {s}"),
        };
        let why = match &t["reason"] {
            Value::Null => String::new(),
            r => format!(": {}", cell(r)),
        };
        out.push(format!(
            "transfer     {} to {} ({}{sip}){why}",
            cell(&t["status"]),
            cell(&t["to"]),
            cell(&t["mode"])
        ));
        let leg = &t["bridge"];
        if leg.is_object() {
            out.push(format!(
                "bridge leg   {} answered {} bridged {} ms",
                cell(&leg["sip_call_id"]),
                cell(&leg["answered_at"]),
                cell(&leg["duration_ms"])
            ));
        }
    }
    if !v["answered_by"].is_null() {
        let why = &v["answered_by_reason"];
        let because = if why["code"].is_null() {
            String::new()
        } else {
            format!(
                " ({} after {} ms)",
                cell(&why["code"]),
                cell(&why["after_ms"])
            )
        };
        out.push(format!("answered by  {}{because}", cell(&v["answered_by"])));
    }
    let seconds = |ms: &Value| {
        ms.as_i64()
            .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
    };
    out.push(format!(
        "rang         {}    talked {}",
        seconds(&v["ring_duration_ms"]),
        seconds(&v["talk_duration_ms"])
    ));
    if let Some(lines) = v["transcript"].as_array().filter(|l| !l.is_empty()) {
        out.push("transcript".into());
        for l in lines {
            out.push(format!("  {:>6}: {}", cell(&l["role"]), cell(&l["text"])));
        }
    }
    if !v["result"].is_null() {
        out.push(format!("result       {}", v["result"]));
    }
    if !v["result_error"].is_null() {
        out.push(format!("result error {}", cell(&v["result_error"])));
    }
    if let Some(m) = v["media_stats"].as_object() {
        let count = |key: &str| m.get(key).and_then(Value::as_u64).unwrap_or_default();
        out.push(format!(
            "media        {} packets in, {} out, {} lost, jitter {:.1} ms",
            count("packets_in"),
            count("packets_out"),
            count("lost"),
            m.get("jitter_ms")
                .and_then(Value::as_f64)
                .unwrap_or_default(),
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_go_both_ways() {
        assert_eq!(
            status_name(proto::CallStatus::InProgress as i32),
            "in_progress"
        );
        assert_eq!(status_of("no_answer"), Some(proto::CallStatus::NoAnswer));
        assert_eq!(status_of("unspecified"), None);
        assert_eq!(status_of("ringing!"), None);
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = [
            json!({"id": "a", "name": "long-name"}),
            json!({"id": "bbb"}),
        ];
        assert_eq!(
            table(&rows, &["id", "name"]),
            "ID   NAME\na    long-name\nbbb  -"
        );
    }
}
