//! The webhook outbox: the events announcing each call's steps, written in the same
//! transaction as the steps (`enqueue_events`), numbered per call and delivered in that order,
//! one event per call at a time, each claimed by the node that delivers it
//! ([`Storage::claim_due_webhooks`]); each attempt is recorded, and an event can be queued
//! again by hand.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use dialtone_model::{CallView, EventType, EventView, WebhookBody, WebhookData};

use crate::rows::{parse_req, uuid_of, values};
use crate::{Backend, Call, Result, Storage, StorageError, now_ms};

/// One webhook event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// Event id (also in the body, for deduplication).
    pub id: Uuid,
    /// The call it announces.
    pub call_id: Uuid,
    /// Its place among the call's events.
    pub sequence: i64,
    /// `call.queued`, `call.dialing`, ...
    pub kind: String,
    /// Where to deliver it.
    pub url: String,
    /// The JSON body, exactly as it is signed and sent.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was written.
    pub created_at: i64,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The receiver took it (2xx).
    Delivered,
    /// Failed; try again at `at` (Unix ms).
    Retry {
        /// What went wrong.
        error: String,
        /// When to try again.
        at: i64,
    },
    /// Failed for good (410, or the retry period is over).
    Dead {
        /// What went wrong last.
        error: String,
    },
}

/// Writes the events announcing `calls`' current statuses (each call once) into the outbox, on
/// `conn` — the same transaction as the changes they announce. Calls without a webhook URL have
/// none.
pub(crate) async fn enqueue_events<'a>(
    conn: &mut AnyConnection,
    calls: impl Iterator<Item = &'a Call>,
) -> Result<()> {
    let hooked: Vec<(&Call, &str)> = calls
        .filter_map(|call| call.webhook_url.as_deref().map(|url| (call, url)))
        .collect();
    if hooked.is_empty() {
        return Ok(());
    }
    // Each call's events are numbered in order.
    let sql = format!(
        "SELECT call_id, MAX(sequence) AS last FROM webhook_events WHERE call_id IN {} \
         GROUP BY call_id",
        values(Backend::of(conn), 1, hooked.len())
    );
    let mut last = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (call, _) in &hooked {
        last = last.bind(call.id.to_string());
    }
    let mut sequences = HashMap::new();
    for row in last.fetch_all(&mut *conn).await? {
        sequences.insert(uuid_of(&row, "call_id")?, row.try_get::<i64, _>("last")?);
    }
    let sql = format!(
        "INSERT INTO webhook_events (id, call_id, sequence, type, url, body, created_at, \
         next_attempt_at) VALUES {}",
        values(Backend::of(conn), hooked.len(), 8)
    );
    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
    let now = now_ms();
    for (call, url) in hooked {
        let id = Uuid::now_v7();
        let sequence = sequences.get(&call.id).copied().unwrap_or(0) + 1;
        let kind = EventType::announcing(call.status);
        let body = WebhookBody {
            id,
            kind,
            created_at: dialtone_model::time::rfc3339(now),
            call_id: call.id,
            sequence,
            data: WebhookData {
                call: CallView::from(call),
            },
        };
        insert = insert
            .bind(id.to_string())
            .bind(call.id.to_string())
            .bind(sequence)
            .bind(kind.as_str())
            .bind(url)
            .bind(serde_json::to_string(&body).unwrap_or_default())
            .bind(now)
            .bind(now);
    }
    insert.execute(&mut *conn).await?;
    Ok(())
}

impl Storage {
    /// Claims for this node, until `claim` from `now`, the events due for delivery at `now`:
    /// oldest first, at most `limit`, at most one per call (the lowest pending sequence, so a
    /// call's events go out in order), none another node holds a live claim on. On PostgreSQL
    /// the rows are taken with `FOR UPDATE SKIP LOCKED`: nodes claiming at once never take the
    /// same event. A claim ends with [`Storage::record_delivery`], or runs out (its node died).
    pub async fn claim_due_webhooks(
        &self,
        now: i64,
        limit: u32,
        claim: std::time::Duration,
    ) -> Result<Vec<WebhookEvent>> {
        let lock = match self.backend {
            crate::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            crate::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_events SET claimed_by = $1, claim_until = $2 WHERE id IN (\
             SELECT e.id FROM webhook_events e WHERE e.state = 'pending' \
             AND e.next_attempt_at <= $3 AND (e.claim_until IS NULL OR e.claim_until < $3) \
             AND NOT EXISTS (SELECT 1 FROM webhook_events p WHERE p.call_id = e.call_id \
             AND p.state = 'pending' AND p.sequence < e.sequence) \
             ORDER BY e.created_at, e.id LIMIT $4 {lock}) RETURNING *"
        );
        let until = now + i64::try_from(claim.as_millis()).unwrap_or(i64::MAX / 2);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&*self.node)
            .bind(until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows
            .iter()
            .map(|row| {
                let attempts: i64 = row.try_get("attempts")?;
                Ok(WebhookEvent {
                    id: uuid_of(row, "id")?,
                    call_id: uuid_of(row, "call_id")?,
                    sequence: row.try_get("sequence")?,
                    kind: row.try_get("type")?,
                    url: row.try_get("url")?,
                    body: row.try_get("body")?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING keeps no order.
        events.sort_by_key(|e| (e.created_at, e.id));
        Ok(events)
    }

    /// Records a delivery attempt and ends this node's claim on the event; an event another
    /// node has claimed since (this node's claim ran out) is left to it.
    pub async fn record_delivery(&self, id: Uuid, outcome: Delivery) -> Result<()> {
        self.record_deliveries(vec![(id, outcome)]).await
    }

    /// [`Storage::record_delivery`] for a batch of attempts, in one transaction: one commit
    /// for every event a delivery round sent.
    pub async fn record_deliveries(&self, attempts: Vec<(Uuid, Delivery)>) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for (id, outcome) in attempts {
            let (state, error, next) = match outcome {
                Delivery::Delivered => ("delivered", None, now),
                Delivery::Retry { error, at } => ("pending", Some(error), at),
                Delivery::Dead { error } => ("dead", Some(error), now),
            };
            sqlx::query(
                "UPDATE webhook_events SET state = $1, attempts = attempts + 1, last_error = $2, \
                 next_attempt_at = $3, delivered_at = CASE WHEN $4 = 'delivered' THEN $5 ELSE NULL END, \
                 claimed_by = NULL, claim_until = NULL \
                 WHERE id = $6 AND (claimed_by IS NULL OR claimed_by = $7)",
            )
            .bind(state)
            .bind(error)
            .bind(next)
            .bind(state)
            .bind(now)
            .bind(id.to_string())
            .bind(&*self.node)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The call an event announces.
    pub async fn event_call(&self, event_id: Uuid) -> Result<Uuid> {
        let row = sqlx::query("SELECT call_id FROM webhook_events WHERE id = $1")
            .bind(event_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "event",
                id: event_id.to_string(),
            })?;
        uuid_of(&row, "call_id")
    }

    /// Queues an event for delivery again, whatever its state. Returns its call's id.
    pub async fn redeliver(&self, event_id: Uuid) -> Result<Uuid> {
        let row = sqlx::query(
            "UPDATE webhook_events SET state = 'pending', next_attempt_at = $1, last_error = NULL \
             WHERE id = $2 RETURNING call_id",
        )
        .bind(now_ms())
        .bind(event_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StorageError::NotFound {
            entity: "event",
            id: event_id.to_string(),
        })?;
        uuid_of(&row, "call_id")
    }

    /// A call's events with their delivery state: `(type, sequence, state, attempts, last_error)`.
    pub async fn call_events(&self, call_id: Uuid) -> Result<Vec<EventView>> {
        let rows = sqlx::query(
            "SELECT id, type, sequence, state, attempts, last_error FROM webhook_events \
             WHERE call_id = $1 ORDER BY sequence",
        )
        .bind(call_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let (sequence, attempts): (i64, i64) =
                    (row.try_get("sequence")?, row.try_get("attempts")?);
                Ok(EventView {
                    id: uuid_of(row, "id")?,
                    kind: parse_req(row, "type", str::parse)?,
                    sequence,
                    state: parse_req(row, "state", str::parse)?,
                    attempts,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{on_both, org, trunk};
    use crate::{CallProgress, CallStatus, NewAgent, NewCall};
    use dialtone_model::DeliveryState;
    use serde_json::Value;

    const CLAIM: std::time::Duration = std::time::Duration::from_secs(60);

    on_both!(each_step_writes_its_event_in_order_and_delivery_goes_one_per_call);
    async fn each_step_writes_its_event_in_order_and_delivery_goes_one_per_call(s: Storage) {
        let t = s.create_trunk(org(&s).await, trunk("t")).await.unwrap();
        let n = s
            .create_number(org(&s).await, "+15550001111", t.id)
            .await
            .unwrap();
        let a = s
            .create_agent(
                org(&s).await,
                NewAgent {
                    name: "a".into(),
                    config: dialtone_model::AgentFields::default(),
                    number_ids: vec![n.id],
                    primary_number_id: Some(n.id),
                },
            )
            .await
            .unwrap();
        let o = org(&s).await;
        let c = s
            .insert_call(NewCall {
                org_id: o,
                direction: crate::Direction::Outbound,
                agent_id: a.id,
                to: "+15551230000".into(),
                from_number: n.e164.clone(),
                trunk_id: t.id,
                instructions: None,
                context: serde_json::json!({}),
                metadata: serde_json::json!({}),
                webhook_url: Some("http://127.0.0.1:9/hook".into()),
            })
            .await
            .unwrap();
        s.advance_call(c.id, CallStatus::Dialing, CallProgress::default())
            .await
            .unwrap();
        // A step backwards writes nothing, event included.
        assert!(
            !s.advance_call(c.id, CallStatus::Queued, CallProgress::default())
                .await
                .unwrap()
        );
        let events = s.call_events(c.id).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["call.queued", "call.dialing"]);
        let due = s.claim_due_webhooks(now_ms(), 10, CLAIM).await.unwrap();
        assert_eq!(due.len(), 1, "one per call, the lowest pending sequence");
        assert_eq!(due[0].kind, "call.queued");
        let body: Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["sequence"], 1);
        assert_eq!(body["data"]["call"]["status"], "queued");
        let retry = Delivery::Retry {
            error: "503".into(),
            at: now_ms() + 60_000,
        };
        s.record_delivery(due[0].id, retry).await.unwrap();
        assert!(
            s.claim_due_webhooks(now_ms(), 10, CLAIM)
                .await
                .unwrap()
                .is_empty(),
            "retry not yet due"
        );
        s.record_delivery(due[0].id, Delivery::Delivered)
            .await
            .unwrap();
        let next = s.claim_due_webhooks(now_ms(), 10, CLAIM).await.unwrap();
        assert_eq!(next[0].kind, "call.dialing");
        let gone = Delivery::Dead {
            error: "410 Gone".into(),
        };
        s.record_delivery(next[0].id, gone).await.unwrap();
        let events = s.call_events(c.id).await.unwrap();
        assert_eq!(events[0].state, DeliveryState::Delivered);
        assert_eq!(events[0].attempts, 2);
        assert_eq!(events[1].state, DeliveryState::Dead);
        // A dead event can be queued again by hand.
        assert_eq!(s.redeliver(next[0].id).await.unwrap(), c.id);
        assert_eq!(
            s.claim_due_webhooks(now_ms(), 10, CLAIM).await.unwrap()[0].id,
            next[0].id
        );
        assert!(matches!(
            s.redeliver(Uuid::now_v7()).await,
            Err(StorageError::NotFound {
                entity: "event",
                ..
            })
        ));
    }

    on_both!(a_round_of_attempts_is_recorded_in_one_go);
    async fn a_round_of_attempts_is_recorded_in_one_go(s: Storage) {
        let first = crate::tests::call(&s).await;
        let mut calls = Vec::new();
        for to in ["+15551230001", "+15551230002", "+15551230003"] {
            let hooked = crate::tests::another(&first, to, Some("http://127.0.0.1:9/hook"));
            calls.push(s.insert_call(hooked).await.unwrap());
        }
        let due = s.claim_due_webhooks(now_ms(), 10, CLAIM).await.unwrap();
        assert_eq!(due.len(), 3, "each call's call.queued");
        let outcome_of = |call: &Call| {
            let event = due.iter().find(|e| e.call_id == call.id).unwrap();
            match call.to.as_str() {
                "+15551230001" => (event.id, Delivery::Delivered),
                "+15551230002" => (
                    event.id,
                    Delivery::Retry {
                        error: "503".into(),
                        at: now_ms() + 60_000,
                    },
                ),
                _ => (
                    event.id,
                    Delivery::Dead {
                        error: "410 Gone".into(),
                    },
                ),
            }
        };
        s.record_deliveries(calls.iter().map(outcome_of).collect())
            .await
            .unwrap();
        let mut states = Vec::new();
        for call in &calls {
            let events = s.call_events(call.id).await.unwrap();
            assert_eq!(events[0].attempts, 1);
            states.push(events[0].state);
        }
        assert_eq!(
            states,
            [
                DeliveryState::Delivered,
                DeliveryState::Pending,
                DeliveryState::Dead
            ]
        );
        assert!(
            s.claim_due_webhooks(now_ms(), 10, CLAIM)
                .await
                .unwrap()
                .is_empty(),
            "the claims ended: nothing is due before the retry"
        );
        s.record_deliveries(Vec::new()).await.unwrap();
    }

    /// Two nodes on one PostgreSQL claiming at once never take the same event, and each
    /// call's events stay in order; a claim that ran out (its node died) lets the other node
    /// take the event; a node whose claim was taken over records nothing.
    #[tokio::test]
    async fn nodes_claim_each_event_once_and_take_over_a_dead_nodes_claims() {
        let Some((url, schema)) = crate::tests::postgres_schema().await else {
            return;
        };
        let a = Storage::open(&url).await.unwrap().with_node("node-a");
        let b = Storage::open(&url).await.unwrap().with_node("node-b");
        let first = crate::tests::call(&a).await;
        for i in 0..40 {
            let c = a
                .insert_call(crate::tests::another(
                    &first,
                    &format!("+1555000{i:04}"),
                    Some("https://example.com/hook"),
                ))
                .await
                .unwrap();
            a.advance_call(c.id, CallStatus::Dialing, CallProgress::default())
                .await
                .unwrap();
        }
        let now = now_ms();
        let (by_a, by_b) = tokio::join!(
            a.claim_due_webhooks(now, 25, CLAIM),
            b.claim_due_webhooks(now, 25, CLAIM)
        );
        let (by_a, by_b) = (by_a.unwrap(), by_b.unwrap());
        let mut ids: Vec<Uuid> = by_a.iter().chain(&by_b).map(|e| e.id).collect();
        let claimed = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), claimed, "an event claimed twice");
        assert!(
            by_a.iter().chain(&by_b).all(|e| e.sequence == 1),
            "only each call's first event is due"
        );
        // Nothing more while the claims hold; once A's run out, B takes A's events over.
        assert!(
            b.claim_due_webhooks(now, 100, CLAIM)
                .await
                .unwrap()
                .iter()
                .all(|e| !ids.contains(&e.id))
        );
        let later = now + CLAIM.as_millis() as i64 + 1;
        let taken: Vec<Uuid> = b
            .claim_due_webhooks(later, 100, CLAIM)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert!(by_a.iter().all(|e| taken.contains(&e.id)));
        // A comes back too late: its delivery is B's to record.
        a.record_delivery(by_a[0].id, Delivery::Delivered)
            .await
            .unwrap();
        let events = a.call_events(by_a[0].call_id).await.unwrap();
        assert_eq!(events[0].state, DeliveryState::Pending);
        b.record_delivery(by_a[0].id, Delivery::Delivered)
            .await
            .unwrap();
        let events = a.call_events(by_a[0].call_id).await.unwrap();
        assert_eq!(events[0].state, DeliveryState::Delivered);
        crate::tests::drop_schema(&a, &schema).await;
    }
}
