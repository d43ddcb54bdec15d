//! Reading calls: one by id, a filtered page of them newest first with the cursor of the next,
//! and the call an idempotency key already names. The call path writes them through the
//! writer (`call_writes.rs`).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::rows::{json_of, opt_json_of, org_of, parse_opt, parse_req, uuid_of};
use crate::{Call, CallStatus, Result, Storage, StorageError};

/// Filters of [`Storage::list_calls`]; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only this organisation's calls.
    pub org_id: Option<Uuid>,
    /// Only this agent's calls.
    pub agent_id: Option<Uuid>,
    /// Only calls in this status.
    pub status: Option<CallStatus>,
    /// Only calls to this number.
    pub to: Option<String>,
    /// Created at or after (Unix ms).
    pub created_after: Option<i64>,
    /// Created before (Unix ms).
    pub created_before: Option<i64>,
}

impl Storage {
    /// The call organisation `org` already dispatched under idempotency `key`, if any; a
    /// different request `hash` is a conflict.
    pub async fn idempotent_replay(
        &self,
        org: Uuid,
        key: &str,
        hash: &str,
    ) -> Result<Option<Call>> {
        self.idempotent_call(&format!("{org}:{key}"), hash).await
    }

    /// The call stored under `key`, if any; a different `hash` is a conflict.
    pub(crate) async fn idempotent_call(&self, key: &str, hash: &str) -> Result<Option<Call>> {
        let mut conn = self.pool.acquire().await?;
        idempotent_call_on(&mut conn, key, hash).await
    }

    /// Calls newest first, filtered, at most `limit`, after `cursor` (from the previous page).
    /// Returns the page and the cursor of the next one.
    pub async fn list_calls(
        &self,
        filter: &CallFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Call>, Option<String>)> {
        let after = cursor.map(parse_cursor).transpose()?;
        let rows = sqlx::query(
            "SELECT id FROM calls WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR to_number = $3) AND ($4 IS NULL OR created_at >= $4) \
             AND ($5 IS NULL OR created_at < $5) \
             AND ($6 IS NULL OR created_at < $6 OR (created_at = $6 AND id < $7)) \
             AND ($9 IS NULL OR org_id = $9) \
             ORDER BY created_at DESC, id DESC LIMIT $8",
        )
        .bind(filter.agent_id.map(|a| a.to_string()))
        .bind(filter.status.map(CallStatus::as_str))
        .bind(filter.to.as_deref())
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(after.as_ref().map(|(t, _)| *t))
        .bind(after.as_ref().map(|(_, id)| id.to_string()))
        .bind(i64::from(limit) + 1)
        .bind(filter.org_id.map(|o| o.to_string()))
        .fetch_all(&self.pool)
        .await?;
        let mut calls = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            calls.push(self.get_call(uuid_of(row, "id")?).await?);
        }
        let next = (rows.len() > limit as usize)
            .then(|| {
                calls
                    .last()
                    .map(|c| format!("{:x}.{}", c.created_at, c.id.simple()))
            })
            .flatten();
        Ok((calls, next))
    }

    /// One call.
    pub async fn get_call(&self, id: Uuid) -> Result<Call> {
        let mut conn = self.pool.acquire().await?;
        fetch_call(&mut conn, id).await
    }
}

/// Reads a cursor made by [`Storage::list_calls`].
fn parse_cursor(cursor: &str) -> Result<(i64, Uuid)> {
    let bad = || StorageError::InvalidCursor {
        cursor: cursor.to_owned(),
    };
    let (t, id) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((
        i64::from_str_radix(t, 16).map_err(|_| bad())?,
        Uuid::parse_str(id).map_err(|_| bad())?,
    ))
}

/// Reads one call on `conn` (a pooled connection or an open transaction).
async fn fetch_call(conn: &mut AnyConnection, id: Uuid) -> Result<Call> {
    let row = sqlx::query("SELECT * FROM calls WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StorageError::NotFound {
            entity: "call",
            id: id.to_string(),
        })?;
    call_from(&row)
}

/// A call from its row (`SELECT *` or `RETURNING *`).
pub(crate) fn call_from(row: &AnyRow) -> Result<Call> {
    let sip_status: Option<i64> = row.try_get("sip_status")?;
    Ok(Call {
        id: uuid_of(row, "id")?,
        org_id: org_of(row)?,
        agent_id: uuid_of(row, "agent_id")?,
        to: row.try_get("to_number")?,
        from_number: row.try_get("from_number")?,
        trunk_id: uuid_of(row, "trunk_id")?,
        direction: parse_req(row, "direction", str::parse)?,
        instructions: row.try_get("instructions")?,
        context: json_of(row, "context")?,
        metadata: json_of(row, "metadata")?,
        webhook_url: row.try_get("webhook_url")?,
        status: parse_req(row, "status", str::parse)?,
        end_reason: parse_opt(row, "end_reason", str::parse)?,
        ended_by: parse_opt(row, "ended_by", str::parse)?,
        sip_call_id: row.try_get("sip_call_id")?,
        answered_by: parse_opt(row, "answered_by", str::parse)?,
        answered_by_reason: parse_opt(row, "answered_by_reason", |t| {
            serde_json::from_str::<dialtone_model::AmdExplanation>(t)
        })?,
        sip_status: sip_status.and_then(|s| u16::try_from(s).ok()),
        transcript: json_of(row, "transcript")?,
        result: opt_json_of(row, "result")?,
        result_error: row.try_get("result_error")?,
        media: opt_json_of(row, "media")?,
        agent_stats: opt_json_of(row, "agent_stats")?,
        summary: row.try_get("summary")?,
        recording: parse_opt(row, "recording", |t| {
            serde_json::from_str::<dialtone_model::RecordingView>(t)
        })?,
        recording_error: row.try_get("recording_error")?,
        transferred_to: row.try_get("transferred_to")?,
        node: row.try_get("node_id")?,
        transfer: parse_opt(row, "transfer", |t| {
            serde_json::from_str::<dialtone_model::Transfer>(t)
        })?,
        created_at: row.try_get("created_at")?,
        dialed_at: row.try_get("dialed_at")?,
        ringing_at: row.try_get("ringing_at")?,
        answered_at: row.try_get("answered_at")?,
        ended_at: row.try_get("ended_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The call stored under the idempotency `key` (scoped to its organisation), if any; a
/// different request `hash` is a conflict.
pub(crate) async fn idempotent_call_on(
    conn: &mut AnyConnection,
    key: &str,
    hash: &str,
) -> Result<Option<Call>> {
    let row = sqlx::query("SELECT body_hash, call_id FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stored: String = row.try_get("body_hash")?;
    if stored != hash {
        return Err(StorageError::Conflict {
            entity: "dispatch",
            field: "Idempotency-Key",
        });
    }
    Ok(Some(fetch_call(conn, uuid_of(&row, "call_id")?).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Inserted;
    use crate::tests::{another, call, on_both};

    on_both!(idempotent_inserts_and_pagination);
    async fn idempotent_inserts_and_pagination(s: Storage) {
        let first = call(&s).await;
        let new = |to: &str| another(&first, to, None);
        let Inserted::New(a) = s
            .insert_call_once(new("+15550000001"), Some(("k1", "h1")))
            .await
            .unwrap()
        else {
            panic!("first use of a key writes a call");
        };
        let again = s
            .insert_call_once(new("+15550000001"), Some(("k1", "h1")))
            .await
            .unwrap();
        assert_eq!(again, Inserted::Existing(a.clone()));
        assert!(matches!(
            s.insert_call_once(new("+15550000002"), Some(("k1", "h2")))
                .await,
            Err(StorageError::Conflict {
                field: "Idempotency-Key",
                ..
            })
        ));
        for i in 0..5 {
            s.insert_call(new(&format!("+1555000010{i}")))
                .await
                .unwrap();
        }
        // 7 calls in all; pages of 3, newest first, no call twice or lost.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = s
                .list_calls(&CallFilter::default(), 3, cursor.as_deref())
                .await
                .unwrap();
            seen.extend(page.iter().map(|c| c.id));
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted, "uuid v7 order is creation order");
        let filtered = CallFilter {
            to: Some("+15550000001".into()),
            ..CallFilter::default()
        };
        let (page, next) = s.list_calls(&filtered, 10, None).await.unwrap();
        assert_eq!((page.len(), next), (1, None));
        assert!(matches!(
            s.list_calls(&CallFilter::default(), 3, Some("nope")).await,
            Err(StorageError::InvalidCursor { .. })
        ));
    }
}
