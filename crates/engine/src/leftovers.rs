//! Calls a killed process left live, hung up on the wire at the next start of its node, or by
//! a survivor once the node is lost ([`hang_up`]). Each call keeps
//! its SIP dialog in storage when its first provisional response and its answer arrive
//! ([`dialtone_sip_ua::UaEvent::Leftover`]); before the start closes such calls
//! (`engine_restart`), [`hang_up_leftovers`] sends each a BYE (answered) or a CANCEL (still
//! ringing) from that state — best effort, all at once, waiting at most a short while for the
//! answers. Each is logged and counted in `dialtone_leftover_hangups_total{request, outcome}`
//! (`request`: `bye` or `cancel`; `outcome`: `answered` — a final response or the core's
//! own end —, `unanswered` within the wait, `failed` — a dialog that cannot be read or sent).

use std::sync::Arc;
use std::time::Duration;

use dialtone_sip_ua::{CallEvent, Leftover, SipUa};
use dialtone_storage::{InterruptedDialog, Storage, StorageError};
use tokio::task::JoinSet;
use uuid::Uuid;

/// How long the start waits for the far ends' answers, all calls together.
pub const LEFTOVER_WAIT: Duration = Duration::from_secs(4);

/// Sends the BYE or CANCEL of every call a previous run of this node left live with a kept
/// dialog, and waits up to `wait` for the answers; returns how many requests left.
pub async fn hang_up_leftovers(
    storage: &Storage,
    ua: &SipUa,
    wait: Duration,
) -> Result<usize, StorageError> {
    let dialogs = storage.interrupted_dialogs().await?;
    hang_up(storage, ua, dialogs, wait).await
}

/// Sends each of `dialogs`' BYE or CANCEL, all at once, and waits up to `wait` for the
/// answers; returns how many requests left. A survivor hangs up a lost node's calls this way,
/// with the dialogs it read before it closed them ([`Storage::lost_dialogs`]).
pub async fn hang_up(
    storage: &Storage,
    ua: &SipUa,
    dialogs: Vec<InterruptedDialog>,
    wait: Duration,
) -> Result<usize, StorageError> {
    let mut ending = JoinSet::new();
    for interrupted in dialogs {
        let id = interrupted.call_id;
        let leftover: Leftover = match serde_json::from_str(&interrupted.dialog) {
            Ok(leftover) => leftover,
            Err(error) => {
                tracing::warn!(call = %id, %error, "a left-over call's SIP dialog cannot be read");
                count("unknown", "failed");
                continue;
            }
        };
        // A TLS trunk's connection needs its settings; a trunk deleted since is tried without.
        let trunk = match storage.get_trunk(interrupted.trunk_id).await {
            Ok(trunk) => Some(Arc::new(crate::trunk_for_ua(&trunk))),
            Err(StorageError::NotFound { .. }) => None,
            Err(error) => {
                tracing::warn!(call = %id, %error, "a left-over call's trunk cannot be read; trying without its settings");
                None
            }
        };
        let ua = ua.clone();
        ending.spawn(async move {
            let request = match leftover {
                Leftover::Dialog { .. } => "bye",
                Leftover::Inviting { .. } => "cancel",
            };
            let outcome = tokio::time::timeout(wait, ua.end_leftover(leftover, trunk)).await;
            (id, request, outcome)
        });
    }
    let sent = ending.len();
    while let Some(done) = ending.join_next().await {
        let Ok((id, request, outcome)) = done else {
            continue;
        };
        report(id, request, outcome);
    }
    Ok(sent)
}

fn report(
    id: Uuid,
    request: &'static str,
    outcome: Result<Result<CallEvent, dialtone_sip_ua::UaError>, tokio::time::error::Elapsed>,
) {
    match outcome {
        Ok(Ok(end)) => {
            tracing::info!(call = %id, request, ?end, "hung up a call the previous run left live");
            count(request, "answered");
        }
        Ok(Err(error)) => {
            tracing::warn!(call = %id, request, %error, "cannot hang up a call the previous run left live");
            count(request, "failed");
        }
        Err(_) => {
            tracing::info!(call = %id, request, "sent the hang-up of a call the previous run left live; no answer yet");
            count(request, "unanswered");
        }
    }
}

fn count(request: &'static str, outcome: &'static str) {
    metrics::counter!("dialtone_leftover_hangups_total", "request" => request, "outcome" => outcome)
        .increment(1);
}
