//! Who answers a call placed to one of our numbers: the live number with that E.164 (numbers
//! are unique across organisations, so the answer is one organisation's), and the oldest live
//! agent attached to it whose `direction` is `inbound` or `both`; and the networks a trunk's
//! calls may also come from (`inbound_cidrs`, a JSON list in the trunk's row).

use dialtone_model::Network;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::uuid_of;
use crate::{Agent, Number, Result, Storage, StorageError};

/// Where a call to a number goes.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRoute {
    /// The number called.
    pub number: Number,
    /// The agent that answers it; `None` when every agent on it only places calls.
    pub agent: Option<Agent>,
}

impl Storage {
    /// The route of a call to `e164`; `None` when no live number has it.
    pub async fn inbound_route(&self, e164: &str) -> Result<Option<InboundRoute>> {
        let row = sqlx::query("SELECT id FROM numbers WHERE e164 = $1 AND deleted_at IS NULL")
            .bind(e164)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let number = self.get_number(uuid_of(&row, "id")?).await?;
        let agent = self.answering_agent(number.id).await?;
        Ok(Some(InboundRoute { number, agent }))
    }

    /// The oldest live agent on number `id` that answers calls.
    pub async fn answering_agent(&self, id: Uuid) -> Result<Option<Agent>> {
        let rows = sqlx::query(
            "SELECT a.id FROM agent_numbers an JOIN agents a ON a.id = an.agent_id \
             WHERE an.number_id = $1 AND a.deleted_at IS NULL ORDER BY a.created_at, a.id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let agent = self.get_agent(uuid_of(row, "id")?).await?;
            if agent.config.direction.is_some_and(|d| d.answers()) {
                return Ok(Some(agent));
            }
        }
        Ok(None)
    }

    /// Sets the networks trunk `id`'s calls may come from (empty: its host's addresses only).
    pub async fn set_inbound_cidrs(&self, id: Uuid, networks: &[Network]) -> Result<()> {
        let list: Vec<String> = networks.iter().map(Network::to_string).collect();
        let text = (!list.is_empty()).then(|| serde_json::Value::from(list).to_string());
        let done = sqlx::query(
            "UPDATE trunks SET inbound_cidrs = $1 WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(text)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound {
                entity: "trunk",
                id: id.to_string(),
            });
        }
        Ok(())
    }
}

/// The networks of a trunk's row (`inbound_cidrs`, a JSON list; none when null).
pub(crate) fn networks_of(row: &AnyRow) -> Result<Vec<Network>> {
    let text: Option<String> = row.try_get("inbound_cidrs")?;
    let corrupt = |detail: String| StorageError::Corrupt {
        column: "trunks.inbound_cidrs",
        detail,
    };
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    list.iter()
        .map(|n| n.parse::<Network>().map_err(corrupt))
        .collect()
}

#[cfg(test)]
mod tests {
    use dialtone_model::{AgentDirection, AgentFields};

    use crate::tests::{on_both, org, trunk};
    use crate::{NewAgent, Storage, StorageError};

    fn agent(name: &str, number: uuid::Uuid, direction: Option<AgentDirection>) -> NewAgent {
        NewAgent {
            name: name.into(),
            config: AgentFields {
                direction,
                ..AgentFields::default()
            },
            number_ids: vec![number],
            primary_number_id: Some(number),
        }
    }

    async fn a_number_routes_to_its_oldest_answering_agent(s: Storage) {
        let o = org(&s).await;
        let t = s.create_trunk(o, trunk("t")).await.unwrap();
        let n = s.create_number(o, "+15557770000", t.id).await.unwrap();
        assert_eq!(s.inbound_route("+15557770001").await.unwrap(), None);
        let outbound = s.create_agent(o, agent("out", n.id, None)).await.unwrap();
        let route = s.inbound_route("+15557770000").await.unwrap().unwrap();
        assert_eq!(route.number.id, n.id);
        assert_eq!(route.agent, None, "an outbound-only agent answers nothing");
        let first = s
            .create_agent(o, agent("in", n.id, Some(AgentDirection::Inbound)))
            .await
            .unwrap();
        s.create_agent(o, agent("both", n.id, Some(AgentDirection::Both)))
            .await
            .unwrap();
        let route = s.inbound_route("+15557770000").await.unwrap().unwrap();
        assert_eq!(route.agent.map(|a| a.id), Some(first.id));
        assert_ne!(first.id, outbound.id);
        // E.164 numbers are unique across organisations: routing is never ambiguous.
        let other = s
            .create_organization("other", None, None)
            .await
            .map(|org| org.id)
            .unwrap();
        let t2 = s.create_trunk(other, trunk("t")).await.unwrap();
        assert!(matches!(
            s.create_number(other, "+15557770000", t2.id).await,
            Err(StorageError::Conflict { field: "e164", .. })
        ));
    }
    on_both!(a_number_routes_to_its_oldest_answering_agent);

    async fn a_trunks_inbound_networks_are_kept_and_cleared(s: Storage) {
        let o = org(&s).await;
        let t = s.create_trunk(o, trunk("t")).await.unwrap();
        assert!(s.get_trunk(t.id).await.unwrap().inbound_cidrs.is_empty());
        let networks: Vec<dialtone_model::Network> = ["203.0.113.0/24", "2001:db8::/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        s.set_inbound_cidrs(t.id, &networks).await.unwrap();
        assert_eq!(s.get_trunk(t.id).await.unwrap().inbound_cidrs, networks);
        s.set_inbound_cidrs(t.id, &[]).await.unwrap();
        assert!(s.get_trunk(t.id).await.unwrap().inbound_cidrs.is_empty());
        assert!(matches!(
            s.set_inbound_cidrs(uuid::Uuid::nil(), &networks).await,
            Err(StorageError::NotFound { .. })
        ));
    }
    on_both!(a_trunks_inbound_networks_are_kept_and_cleared);
}
