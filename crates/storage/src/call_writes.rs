//! The call path's writes: a new call ([`Storage::insert_call`], under an idempotency key or
//! not), a status step ([`Storage::advance_call`]) and the details that are not steps (result,
//! transcript, who answered). Each is a kind of [`Write`] that the writer (`writer.rs`) commits
//! in groups, applying a whole group in a few set-based statements. A step only ever moves a
//! call forward — the `UPDATE` compares ranks, the stored status's computed in SQL — and new
//! calls and steps enqueue the events announcing them in the same transaction.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::calls::{call_from, idempotent_call_on};
use crate::outbox::enqueue_events;
use crate::rows::{unique_violation, uuid_of, values};
use crate::writer::{Pending, Write};
use crate::{
    AmdExplanation, AnsweredBy, Backend, Call, CallStatus, Direction, EndReason, EndedBy, Result,
    Storage, StorageError, Transfer, now_ms,
};

/// Whose live calls a start-up or a survivor deals with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owners<'a> {
    /// Every node's (SQLite: there is one).
    Every,
    /// This node's, and those from before nodes were recorded.
    Own(&'a str),
    /// A lost node's alone.
    Lost(&'a str),
}

impl Owners<'_> {
    /// The query's binds: every call, the node, and whether calls of no node count.
    fn binds(self) -> (bool, String, bool) {
        match self {
            Self::Every => (true, String::new(), true),
            Self::Own(node) => (false, node.to_owned(), true),
            Self::Lost(node) => (false, node.to_owned(), false),
        }
    }
}

/// A call a previous run left live with its SIP dialog kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptedDialog {
    /// The call.
    pub call_id: Uuid,
    /// The trunk it was placed through.
    pub trunk_id: Uuid,
    /// What ending it on the wire needs (JSON text, the SIP user agent's leftover).
    pub dialog: String,
}

/// Fields of a new call.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCall {
    /// The organisation.
    pub org_id: Uuid,
    /// The agent.
    pub agent_id: Uuid,
    /// Destination.
    pub to: String,
    /// Caller ID.
    pub from_number: String,
    /// Trunk.
    pub trunk_id: Uuid,
    /// Dispatched by us or answered for one of the agent's numbers.
    pub direction: Direction,
    /// Effective instructions.
    pub instructions: Option<String>,
    /// Context.
    pub context: Value,
    /// Metadata.
    pub metadata: Value,
    /// Effective webhook URL.
    pub webhook_url: Option<String>,
}

/// What changes with a status step; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallProgress {
    /// When the step happened, in ms since the Unix epoch (`None`: when it is written).
    pub at: Option<i64>,
    /// SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// Final SIP status.
    pub sip_status: Option<u16>,
    /// End reason.
    pub end_reason: Option<EndReason>,
    /// Who ended it.
    pub ended_by: Option<EndedBy>,
    /// Media statistics.
    pub media: Option<Value>,
    /// Transcript.
    pub transcript: Option<Value>,
    /// The finished recording (a final step's).
    pub recording: Option<Value>,
    /// Why the recording the agent asked for is missing (a final step's).
    pub recording_error: Option<String>,
}

/// What [`Storage::insert_call_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new call was written.
    New(Call),
    /// The idempotency key named an earlier call with the same body.
    Existing(Call),
}

impl Storage {
    /// Writes a new call in status `queued` (and its `call.queued` event, in one transaction).
    pub async fn insert_call(&self, c: NewCall) -> Result<Call> {
        match self.insert_call_once(c, None).await? {
            Inserted::New(call) | Inserted::Existing(call) => Ok(call),
        }
    }

    /// Like [`Storage::insert_call`], under an idempotency key: the first request with `key`
    /// writes the call; a later one with the same `body_hash` gets that call back
    /// ([`Inserted::Existing`]); one with another body is a [`StorageError::Conflict`].
    pub async fn insert_call_once(
        &self,
        c: NewCall,
        key: Option<(&str, &str)>,
    ) -> Result<Inserted> {
        // Keys are per organisation.
        let key = key.map(|(k, hash)| (format!("{}:{k}", c.org_id), hash.to_owned()));
        if let Some((key, hash)) = &key
            && let Some(existing) = self.idempotent_call(key, hash).await?
        {
            return Ok(Inserted::Existing(existing));
        }
        self.writer
            .write(InsertCall {
                id: Uuid::now_v7(),
                now: now_ms(),
                call: c,
                key,
                node: self.node.clone(),
            })
            .await
    }

    /// Moves a call to `status` with `progress`, only if that is a step forward. Returns
    /// whether the row changed (a late or repeated step leaves it alone).
    pub async fn advance_call(
        &self,
        id: Uuid,
        status: CallStatus,
        progress: CallProgress,
    ) -> Result<bool> {
        self.writer
            .write(AdvanceCall {
                id,
                status,
                at: progress.at.unwrap_or_else(now_ms),
                progress,
            })
            .await
    }

    /// Records the call's structured result, or why there is none (validated by the caller
    /// against the agent's `returns`). Not a status step: no event.
    pub async fn set_result(
        &self,
        id: Uuid,
        result: Option<&Value>,
        result_error: Option<&str>,
    ) -> Result<()> {
        let detail = CallDetail::Result {
            result: result.map(Value::to_string),
            error: result_error.map(str::to_owned),
        };
        self.set_detail(id, detail).await
    }

    /// Replaces the call's transcript (a list of `{role, text, at}`).
    pub async fn set_transcript(&self, id: Uuid, transcript: &Value) -> Result<()> {
        self.set_detail(id, CallDetail::Transcript(transcript.to_string()))
            .await
    }

    /// Records the built-in agent's figures and its summary of the conversation.
    pub async fn set_agent_outcome(
        &self,
        id: Uuid,
        agent_stats: &Value,
        summary: Option<&str>,
    ) -> Result<()> {
        let detail = CallDetail::AgentOutcome {
            agent_stats: agent_stats.to_string(),
            summary: summary.map(str::to_owned),
        };
        self.set_detail(id, detail).await
    }

    /// Records who answered (answering-machine detection) and why. Not a status step: no
    /// event.
    pub async fn set_answered_by(
        &self,
        id: Uuid,
        answered_by: AnsweredBy,
        reason: &AmdExplanation,
    ) -> Result<()> {
        let reason = serde_json::to_string(reason).map_err(|e| StorageError::Corrupt {
            column: "answered_by_reason",
            detail: e.to_string(),
        })?;
        self.set_detail(id, CallDetail::AnsweredBy(answered_by, reason))
            .await
    }

    async fn set_detail(&self, id: Uuid, detail: CallDetail) -> Result<()> {
        self.writer
            .write(SetDetail {
                id,
                now: now_ms(),
                detail,
            })
            .await
    }

    /// Records the call's last transfer attempt and, once one completed, where the caller
    /// went (`transferred_to`; `None` keeps the one stored). Not a status step: no event.
    pub async fn set_transfer(
        &self,
        id: Uuid,
        transfer: &Transfer,
        transferred_to: Option<&str>,
    ) -> Result<()> {
        let text = serde_json::to_string(transfer).map_err(|e| StorageError::Corrupt {
            column: "transfer",
            detail: e.to_string(),
        })?;
        let detail = CallDetail::Transfer {
            transfer: text,
            transferred_to: transferred_to.map(str::to_owned),
        };
        self.set_detail(id, detail).await
    }

    /// Keeps what ending the call on the wire needs (JSON text, the SIP user agent's
    /// leftover), for the next start should this process die with the call live. Not a
    /// status step: no event.
    pub async fn set_sip_dialog(&self, id: Uuid, dialog: &str) -> Result<()> {
        self.set_detail(id, CallDetail::SipDialog(dialog.to_owned()))
            .await
    }

    /// The calls a previous run of this node (on SQLite, of any: it has one) left unfinished
    /// that kept a SIP dialog, to be ended on the wire before
    /// [`Storage::close_interrupted_calls`] closes them.
    pub async fn interrupted_dialogs(&self) -> Result<Vec<InterruptedDialog>> {
        self.live_dialogs(self.own_calls()).await
    }

    /// The calls this node answers for at its start: on SQLite every call (it has one
    /// node); on PostgreSQL its own, and those from before nodes were recorded.
    fn own_calls(&self) -> Owners<'_> {
        match self.backend {
            Backend::Sqlite => Owners::Every,
            Backend::Postgres => Owners::Own(&self.node),
        }
    }

    /// The live calls of `owners` that kept a SIP dialog.
    pub(crate) async fn live_dialogs(&self, owners: Owners<'_>) -> Result<Vec<InterruptedDialog>> {
        let (every, node, unowned) = owners.binds();
        let rows = sqlx::query(
            "SELECT id, trunk_id, sip_dialog FROM calls WHERE status IN ('dialing', 'ringing', \
             'in_progress') AND sip_dialog IS NOT NULL \
             AND ($1 OR node_id = $2 OR ($3 AND node_id IS NULL))",
        )
        .bind(every)
        .bind(node)
        .bind(unowned)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let dialog: String =
                    row.try_get("sip_dialog")
                        .map_err(|e| StorageError::Corrupt {
                            column: "sip_dialog",
                            detail: e.to_string(),
                        })?;
                Ok(InterruptedDialog {
                    call_id: uuid_of(row, "id")?,
                    trunk_id: uuid_of(row, "trunk_id")?,
                    dialog,
                })
            })
            .collect()
    }

    /// Fails every live call of `owners` with `reason`, by `engine`, announcing each; each is
    /// closed once even when several nodes race (a status only moves forward). Returns how
    /// many this call closed.
    pub(crate) async fn fail_live_calls(
        &self,
        owners: Owners<'_>,
        reason: EndReason,
    ) -> Result<u64> {
        let (every, node, unowned) = owners.binds();
        let rows = sqlx::query(
            "SELECT id FROM calls WHERE status IN ('queued', 'dialing', 'ringing', 'in_progress') \
             AND ($1 OR node_id = $2 OR ($3 AND node_id IS NULL))",
        )
        .bind(every)
        .bind(node)
        .bind(unowned)
        .fetch_all(&self.pool)
        .await?;
        let mut closed = 0;
        for row in &rows {
            let id = uuid_of(row, "id")?;
            let progress = CallProgress {
                end_reason: Some(reason),
                ended_by: Some(EndedBy::Engine),
                ..CallProgress::default()
            };
            if self.advance_call(id, CallStatus::Failed, progress).await? {
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Ends every call a previous run of this node left unfinished (the process died with them
    /// live; on SQLite, every node's: it has one) with status `failed` and end reason
    /// `engine_restart`, announcing each; returns how many.
    pub async fn close_interrupted_calls(&self) -> Result<u64> {
        let closed = self
            .fail_live_calls(self.own_calls(), EndReason::EngineRestart)
            .await?;
        self.drop_node_holds(&self.node).await?;
        Ok(closed)
    }
}

/// A new call (`queued`), its idempotency key if it has one, and the event announcing it.
pub(crate) struct InsertCall {
    id: Uuid,
    now: i64,
    call: NewCall,
    /// The key scoped to the organisation, and the request's hash.
    key: Option<(String, String)>,
    /// The node that owns it.
    node: std::sync::Arc<str>,
}

impl Write for InsertCall {
    type Output = Inserted;

    fn call_id(&self) -> Uuid {
        self.id
    }

    fn apply_all<'c>(
        conn: &'c mut AnyConnection,
        writes: &'c [&'c Self],
    ) -> Pending<'c, Vec<Inserted>> {
        Box::pin(async move {
            let sql = format!(
                "INSERT INTO calls (id, agent_id, to_number, from_number, trunk_id, instructions, \
                 context, metadata, webhook_url, status, created_at, updated_at, org_id, node_id, \
                 direction) VALUES {} RETURNING *",
                values(Backend::of(conn), writes.len(), 15)
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for w in writes {
                let c = &w.call;
                insert = insert
                    .bind(w.id.to_string())
                    .bind(c.agent_id.to_string())
                    .bind(c.to.as_str())
                    .bind(c.from_number.as_str())
                    .bind(c.trunk_id.to_string())
                    .bind(c.instructions.as_deref())
                    .bind(c.context.to_string())
                    .bind(c.metadata.to_string())
                    .bind(c.webhook_url.as_deref())
                    .bind(CallStatus::Queued.as_str())
                    .bind(w.now)
                    .bind(w.now)
                    .bind(c.org_id.to_string())
                    .bind(&*w.node)
                    .bind(c.direction.as_str());
            }
            let mut written = HashMap::new();
            for row in insert.fetch_all(&mut *conn).await? {
                let call = call_from(&row)?;
                written.insert(call.id, call);
            }
            let keyed: Vec<_> = writes
                .iter()
                .filter_map(|w| w.key.as_ref().map(|key| (w, key)))
                .collect();
            if !keyed.is_empty() {
                let sql = format!(
                    "INSERT INTO idempotency_keys (key, body_hash, call_id, created_at) VALUES {}",
                    values(Backend::of(conn), keyed.len(), 4)
                );
                let mut claim = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (w, (key, hash)) in keyed {
                    claim = claim
                        .bind(key.as_str())
                        .bind(hash.as_str())
                        .bind(w.id.to_string())
                        .bind(w.now);
                }
                claim.execute(&mut *conn).await?;
            }
            let calls = writes
                .iter()
                .map(|w| {
                    written.remove(&w.id).ok_or_else(|| StorageError::NotFound {
                        entity: "call",
                        id: w.id.to_string(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            enqueue_events(conn, calls.iter()).await?;
            Ok(calls.into_iter().map(Inserted::New).collect())
        })
    }

    /// A concurrent request took the key first: ours is rolled back, theirs wins.
    fn recover<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        error: StorageError,
    ) -> Pending<'c, Inserted> {
        Box::pin(async move {
            match (&self.key, &error) {
                (Some((key, hash)), StorageError::Database(e)) if unique_violation(e) => {
                    idempotent_call_on(conn, key, hash)
                        .await?
                        .map(Inserted::Existing)
                        .ok_or(error)
                }
                _ => Err(error),
            }
        })
    }
}

/// A status step, only if it moves the call forward, with the event announcing it.
pub(crate) struct AdvanceCall {
    id: Uuid,
    status: CallStatus,
    /// When the step happened: the progress's time, or when it was asked for.
    at: i64,
    progress: CallProgress,
}

/// A status's place in a call's life ([`CallStatus::rank`]): a step only ever goes to a
/// higher one.
fn rank(status: CallStatus) -> i64 {
    i64::from(status.rank())
}

/// [`rank`] in SQL, of the status in `column`: the statuses before the end by name, every
/// final one past them.
fn rank_in_sql(column: &str) -> String {
    let before_the_end = [
        CallStatus::Queued,
        CallStatus::Dialing,
        CallStatus::Ringing,
        CallStatus::InProgress,
    ]
    .map(|status| format!("WHEN '{}' THEN {}", status.as_str(), rank(status)))
    .join(" ");
    format!(
        "(CASE {column} {before_the_end} ELSE {} END)",
        rank(CallStatus::Completed)
    )
}

impl Write for AdvanceCall {
    /// Whether the row changed.
    type Output = bool;

    fn call_id(&self) -> Uuid {
        self.id
    }

    fn apply_all<'c>(
        conn: &'c mut AnyConnection,
        writes: &'c [&'c Self],
    ) -> Pending<'c, Vec<bool>> {
        Box::pin(async move {
            // The steps as a table; its columns are prefixed so that PostgreSQL's `RETURNING *`
            // (every table of the statement) does not repeat the calls' column names.
            let sql = format!(
                "WITH step (step_id, step_status, step_rank, step_at, step_sip_call_id, \
                 step_sip_status, step_end_reason, step_ended_by, step_media, step_transcript, \
                 step_recording, step_recording_error) \
                 AS (VALUES {values}) \
                 UPDATE calls SET status = step.step_status, updated_at = step.step_at, \
                 dialed_at = CASE WHEN step.step_rank = {dialing} \
                   THEN COALESCE(calls.dialed_at, step.step_at) ELSE calls.dialed_at END, \
                 ringing_at = CASE WHEN step.step_rank = {ringing} \
                   THEN COALESCE(calls.ringing_at, step.step_at) ELSE calls.ringing_at END, \
                 answered_at = CASE WHEN step.step_rank = {answered} \
                   THEN COALESCE(calls.answered_at, step.step_at) ELSE calls.answered_at END, \
                 ended_at = CASE WHEN step.step_rank = {ended} \
                   THEN COALESCE(calls.ended_at, step.step_at) ELSE calls.ended_at END, \
                 sip_call_id = COALESCE(step.step_sip_call_id, calls.sip_call_id), \
                 sip_status = COALESCE(step.step_sip_status, calls.sip_status), \
                 end_reason = COALESCE(step.step_end_reason, calls.end_reason), \
                 ended_by = COALESCE(step.step_ended_by, calls.ended_by), \
                 media = COALESCE(step.step_media, calls.media), \
                 transcript = COALESCE(step.step_transcript, calls.transcript), \
                 recording = COALESCE(step.step_recording, calls.recording), \
                 recording_error = COALESCE(step.step_recording_error, calls.recording_error) \
                 FROM step WHERE calls.id = step.step_id \
                 AND {current} < step.step_rank RETURNING *",
                values = values(Backend::of(conn), writes.len(), 12),
                dialing = rank(CallStatus::Dialing),
                ringing = rank(CallStatus::Ringing),
                answered = rank(CallStatus::InProgress),
                ended = rank(CallStatus::Completed),
                current = rank_in_sql("calls.status"),
            );
            let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
            for w in writes {
                let progress = &w.progress;
                update = update
                    .bind(w.id.to_string())
                    .bind(w.status.as_str())
                    .bind(rank(w.status))
                    .bind(w.at)
                    .bind(progress.sip_call_id.as_deref())
                    .bind(progress.sip_status.map(i64::from))
                    .bind(progress.end_reason.map(EndReason::as_str))
                    .bind(progress.ended_by.map(EndedBy::as_str))
                    .bind(progress.media.as_ref().map(Value::to_string))
                    .bind(progress.transcript.as_ref().map(Value::to_string))
                    .bind(progress.recording.as_ref().map(Value::to_string))
                    .bind(progress.recording_error.as_deref());
            }
            let mut advanced = HashMap::new();
            for row in update.fetch_all(&mut *conn).await? {
                let call = call_from(&row)?;
                advanced.insert(call.id, call);
            }
            // The events announcing the steps commit with them, or neither does.
            enqueue_events(conn, writes.iter().filter_map(|w| advanced.get(&w.id))).await?;
            Ok(writes
                .iter()
                .map(|w| advanced.contains_key(&w.id))
                .collect())
        })
    }
}

/// A detail of a call that is not a status step (no event).
enum CallDetail {
    /// The structured result (JSON text; `None` keeps the one stored) and why there is none.
    Result {
        result: Option<String>,
        error: Option<String>,
    },
    /// The whole transcript, JSON text.
    Transcript(String),
    /// Who answered, and why (JSON text).
    AnsweredBy(AnsweredBy, String),
    /// The built-in agent's figures (JSON text) and summary.
    AgentOutcome {
        agent_stats: String,
        summary: Option<String>,
    },
    /// What ending the call on the wire needs (JSON text).
    SipDialog(String),
    /// The last transfer attempt (JSON text) and where the caller went.
    Transfer {
        transfer: String,
        transferred_to: Option<String>,
    },
}

/// Writes a [`CallDetail`].
pub(crate) struct SetDetail {
    id: Uuid,
    now: i64,
    detail: CallDetail,
}

impl Write for SetDetail {
    type Output = ();

    fn call_id(&self) -> Uuid {
        self.id
    }

    /// One statement each: details are written a few times in a call's life, not per step.
    fn apply_all<'c>(conn: &'c mut AnyConnection, writes: &'c [&'c Self]) -> Pending<'c, Vec<()>> {
        Box::pin(async move {
            for w in writes {
                let query = match &w.detail {
                    CallDetail::Result { result, error } => sqlx::query(
                        "UPDATE calls SET result = COALESCE($1, result), result_error = $2, \
                         updated_at = $3 WHERE id = $4",
                    )
                    .bind(result.as_deref())
                    .bind(error.as_deref()),
                    CallDetail::Transcript(transcript) => sqlx::query(
                        "UPDATE calls SET transcript = $1, updated_at = $2 WHERE id = $3",
                    )
                    .bind(transcript.as_str()),
                    CallDetail::AnsweredBy(who, reason) => sqlx::query(
                        "UPDATE calls SET answered_by = $1, answered_by_reason = $2, \
                         updated_at = $3 WHERE id = $4",
                    )
                    .bind(who.as_str())
                    .bind(reason.as_str()),
                    CallDetail::AgentOutcome {
                        agent_stats,
                        summary,
                    } => sqlx::query(
                        "UPDATE calls SET agent_stats = $1, summary = COALESCE($2, summary), \
                         updated_at = $3 WHERE id = $4",
                    )
                    .bind(agent_stats.as_str())
                    .bind(summary.as_deref()),
                    CallDetail::SipDialog(dialog) => sqlx::query(
                        "UPDATE calls SET sip_dialog = $1, updated_at = $2 WHERE id = $3",
                    )
                    .bind(dialog.as_str()),
                    CallDetail::Transfer {
                        transfer,
                        transferred_to,
                    } => sqlx::query(
                        "UPDATE calls SET transfer = $1, \
                         transferred_to = COALESCE($2, transferred_to), updated_at = $3 \
                         WHERE id = $4",
                    )
                    .bind(transfer.as_str())
                    .bind(transferred_to.as_deref()),
                };
                query
                    .bind(w.now)
                    .bind(w.id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(vec![(); writes.len()])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{another, call, on_both};
    use crate::{CallFilter, writer};

    on_both!(a_kept_sip_dialog_waits_for_the_next_start_while_the_call_is_live);
    async fn a_kept_sip_dialog_waits_for_the_next_start_while_the_call_is_live(s: Storage) {
        let kept = call(&s).await;
        let without = s
            .insert_call(another(&kept, "+15550000299", None))
            .await
            .unwrap();
        for c in [&kept, &without] {
            s.advance_call(c.id, CallStatus::InProgress, CallProgress::default())
                .await
                .unwrap();
        }
        s.set_sip_dialog(kept.id, r#"{"state":"dialog"}"#)
            .await
            .unwrap();
        assert_eq!(
            s.interrupted_dialogs().await.unwrap(),
            vec![InterruptedDialog {
                call_id: kept.id,
                trunk_id: kept.trunk_id,
                dialog: r#"{"state":"dialog"}"#.to_owned(),
            }]
        );
        assert_eq!(s.close_interrupted_calls().await.unwrap(), 2);
        assert!(s.interrupted_dialogs().await.unwrap().is_empty());
    }

    on_both!(a_transfer_attempt_and_where_the_caller_went_are_kept);
    async fn a_transfer_attempt_and_where_the_caller_went_are_kept(s: Storage) {
        use dialtone_model::{TransferFailure, TransferMode, TransferStatus};
        let c = call(&s).await;
        assert_eq!((c.transfer.clone(), c.transferred_to.clone()), (None, None));
        let failed = Transfer {
            to: "+15550001111".into(),
            mode: TransferMode::Refer,
            status: TransferStatus::Failed,
            sip_status: Some(486),
            reason: Some(TransferFailure::DestinationFailed),
            bridge: None,
        };
        s.set_transfer(c.id, &failed, None).await.unwrap();
        let read = s.get_call(c.id).await.unwrap();
        assert_eq!(read.transfer.as_ref(), Some(&failed));
        assert_eq!(read.transferred_to, None);
        // A bridged one keeps its second leg on the record.
        let completed = Transfer {
            to: "sip:desk@pbx.example.com".into(),
            mode: TransferMode::Bridge,
            status: TransferStatus::Completed,
            sip_status: Some(200),
            reason: None,
            bridge: Some(dialtone_model::BridgeLeg {
                sip_call_id: Some("leg2@127.0.0.1".into()),
                answered_at: Some("2026-01-02T03:04:05.678Z".into()),
                duration_ms: Some(12_345),
            }),
        };
        s.set_transfer(c.id, &completed, Some("sip:desk@pbx.example.com"))
            .await
            .unwrap();
        let read = s.get_call(c.id).await.unwrap();
        assert_eq!(read.transfer, Some(completed));
        assert_eq!(
            read.transferred_to.as_deref(),
            Some("sip:desk@pbx.example.com")
        );
    }

    on_both!(call_status_only_moves_forward);
    async fn call_status_only_moves_forward(s: Storage) {
        let c = call(&s).await;
        assert_eq!(c.status, CallStatus::Queued);
        assert!(
            s.advance_call(
                c.id,
                CallStatus::Dialing,
                CallProgress {
                    sip_call_id: Some("abc".into()),
                    ..CallProgress::default()
                }
            )
            .await
            .unwrap()
        );
        assert!(
            s.advance_call(c.id, CallStatus::InProgress, CallProgress::default())
                .await
                .unwrap()
        );
        assert!(
            !s.advance_call(c.id, CallStatus::Ringing, CallProgress::default())
                .await
                .unwrap()
        );
        assert!(
            s.advance_call(
                c.id,
                CallStatus::Completed,
                CallProgress {
                    end_reason: Some(EndReason::Completed),
                    ended_by: Some(EndedBy::Callee),
                    ..CallProgress::default()
                }
            )
            .await
            .unwrap()
        );
        assert!(
            !s.advance_call(c.id, CallStatus::Failed, CallProgress::default())
                .await
                .unwrap()
        );
        let c = s.get_call(c.id).await.unwrap();
        assert_eq!(c.status, CallStatus::Completed);
        assert_eq!(c.sip_call_id.as_deref(), Some("abc"));
        assert_eq!(c.end_reason, Some(EndReason::Completed));
        assert!(c.dialed_at.is_some() && c.answered_at.is_some() && c.ended_at.is_some());
        assert_eq!(c.ringing_at, None);
        assert_eq!(c.context, serde_json::json!({"k": 1}));
    }

    on_both!(the_sql_rank_of_every_status_is_its_rank);
    /// The rank the database computes for a stored status is the one `rank` gives it.
    async fn the_sql_rank_of_every_status_is_its_rank(s: Storage) {
        use sqlx::Row;
        for &status in CallStatus::ALL {
            let sql = format!(
                "SELECT {} AS r",
                rank_in_sql(&format!("'{}'", status.as_str()))
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_one(&s.pool)
                .await
                .unwrap();
            let in_sql: i64 = row.try_get("r").unwrap();
            assert_eq!(in_sql, rank(status), "{status:?}");
        }
    }

    on_both!(a_step_keeps_the_time_it_happened_at);
    async fn a_step_keeps_the_time_it_happened_at(s: Storage) {
        let c = call(&s).await;
        // Written later than they happened, as a call's progress writer may.
        let (answered, ended) = (now_ms() - 5_000, now_ms() - 1_000);
        for (status, at) in [
            (CallStatus::InProgress, answered),
            (CallStatus::Completed, ended),
        ] {
            let step = CallProgress {
                at: Some(at),
                ..CallProgress::default()
            };
            assert!(s.advance_call(c.id, status, step).await.unwrap());
        }
        let c = s.get_call(c.id).await.unwrap();
        assert_eq!(c.answered_at, Some(answered));
        assert_eq!(c.ended_at, Some(ended));
    }

    on_both!(a_group_with_a_failing_write_commits_the_rest);
    /// What queued up together is committed together; a write that fails in the group is
    /// answered alone and the others still commit, each caller told its own outcome.
    async fn a_group_with_a_failing_write_commits_the_rest(s: Storage) {
        let first = call(&s).await;
        let insert = |to: &str, key: Option<(&str, &str)>| InsertCall {
            id: Uuid::now_v7(),
            now: now_ms(),
            call: another(&first, to, Some("https://example.com/hook")),
            key: key.map(|(k, h)| (k.to_owned(), h.to_owned())),
            node: s.node.clone(),
        };
        let mut conn = s.pool.acquire().await.unwrap();
        let told = writer::commit_together(
            &mut conn,
            vec![
                insert("+15550000001", Some(("k", "h"))),
                // The same key and request: the first one's call.
                insert("+15550000001", Some(("k", "h"))),
                // The same key, another request: refused.
                insert("+15550000002", Some(("k", "other"))),
                insert("+15550000003", None),
            ],
        )
        .await;
        drop(conn);
        let [a, b, c, d] = <[_; 4]>::try_from(told).unwrap();
        let Inserted::New(a) = a.unwrap() else {
            panic!("the key's first use writes a call");
        };
        assert_eq!(b.unwrap(), Inserted::Existing(a.clone()));
        assert!(matches!(
            c,
            Err(StorageError::Conflict {
                field: "Idempotency-Key",
                ..
            })
        ));
        let Inserted::New(d) = d.unwrap() else {
            panic!("a call without a key is new");
        };
        for written in [&a, &d] {
            assert_eq!(s.get_call(written.id).await.unwrap(), *written);
            // Its `call.queued` event committed with it.
            assert_eq!(s.call_events(written.id).await.unwrap().len(), 1);
        }
        let (all, _) = s
            .list_calls(&CallFilter::default(), 10, None)
            .await
            .unwrap();
        assert_eq!(
            all.len(),
            3,
            "the first call, a and d; nothing of the refused one"
        );
    }

    on_both!(a_group_of_steps_keeps_each_calls_order);
    /// Steps of several calls in one group are one statement; two steps of one call in the
    /// same group still apply in their order (rounds), a step backwards changes nothing, and the
    /// events are numbered per call in the order of the steps.
    async fn a_group_of_steps_keeps_each_calls_order(s: Storage) {
        let first = call(&s).await;
        let hooked = |to: &str| another(&first, to, Some("https://example.com/hook"));
        let a = s.insert_call(hooked("+15550000001")).await.unwrap();
        let b = s.insert_call(hooked("+15550000002")).await.unwrap();
        let step = |id: Uuid, status: CallStatus, at: i64| AdvanceCall {
            id,
            status,
            at,
            progress: CallProgress {
                at: Some(at),
                sip_call_id: Some(format!("sip-{id}")),
                ..CallProgress::default()
            },
        };
        let mut conn = s.pool.acquire().await.unwrap();
        let told = writer::commit_together(
            &mut conn,
            vec![
                step(a.id, CallStatus::Dialing, 1_000),
                step(b.id, CallStatus::Ringing, 1_100),
                step(a.id, CallStatus::InProgress, 1_200),
                // Behind `ringing` already in this group: refused.
                step(b.id, CallStatus::Dialing, 1_300),
                step(a.id, CallStatus::Completed, 1_400),
            ],
        )
        .await;
        drop(conn);
        let told: Vec<bool> = told.into_iter().map(Result::unwrap).collect();
        assert_eq!(told, [true, true, true, false, true]);
        let a = s.get_call(a.id).await.unwrap();
        assert_eq!(a.status, CallStatus::Completed);
        assert_eq!(
            (a.dialed_at, a.answered_at, a.ended_at),
            (Some(1_000), Some(1_200), Some(1_400))
        );
        assert_eq!(a.sip_call_id, Some(format!("sip-{}", a.id)));
        let b = s.get_call(b.id).await.unwrap();
        assert_eq!(
            (b.status, b.ringing_at, b.dialed_at),
            (CallStatus::Ringing, Some(1_100), None)
        );
        let kinds = |events: Vec<dialtone_model::EventView>| -> Vec<(i64, String)> {
            events
                .iter()
                .map(|e| (e.sequence, e.kind.as_str().to_owned()))
                .collect()
        };
        assert_eq!(
            kinds(s.call_events(a.id).await.unwrap()),
            [
                (1, "call.queued".to_owned()),
                (2, "call.dialing".to_owned()),
                (3, "call.answered".to_owned()),
                (4, "call.ended".to_owned())
            ]
        );
        assert_eq!(
            kinds(s.call_events(b.id).await.unwrap()),
            [
                (1, "call.queued".to_owned()),
                (2, "call.ringing".to_owned())
            ]
        );
    }

    on_both!(concurrent_writes_all_commit_and_close_refuses_later_ones);
    /// Writes from many callers at once all commit and each gets its own answer; after
    /// `close`, what was queued is in and later writes are refused.
    async fn concurrent_writes_all_commit_and_close_refuses_later_ones(s: Storage) {
        let first = call(&s).await;
        let mut steps = tokio::task::JoinSet::new();
        for i in 0..50 {
            let (s, first) = (s.clone(), first.clone());
            steps.spawn(async move {
                let call = s
                    .insert_call(another(&first, &format!("+155500002{i:02}"), None))
                    .await
                    .unwrap();
                let advanced = s
                    .advance_call(call.id, CallStatus::Dialing, CallProgress::default())
                    .await
                    .unwrap();
                let repeated = s
                    .advance_call(call.id, CallStatus::Dialing, CallProgress::default())
                    .await
                    .unwrap();
                s.set_transcript(call.id, &serde_json::json!([{"role": "agent", "text": i}]))
                    .await
                    .unwrap();
                (call.id, advanced, repeated)
            });
        }
        for (id, advanced, repeated) in steps.join_all().await {
            assert!(
                advanced && !repeated,
                "one step forward, the repeat refused"
            );
            let call = s.get_call(id).await.unwrap();
            assert_eq!(call.status, CallStatus::Dialing);
            assert_eq!(call.transcript.as_array().map(Vec::len), Some(1));
        }
        let reason = AmdExplanation::new(dialtone_model::AmdReason::AfterGreetingSilence, 1400);
        let queued = s.set_answered_by(first.id, AnsweredBy::Human, &reason);
        let (queued, ()) = tokio::join!(queued, s.writer.close());
        queued.unwrap();
        assert!(matches!(
            s.set_answered_by(first.id, AnsweredBy::Machine, &reason)
                .await,
            Err(StorageError::Closed)
        ));
    }
}
