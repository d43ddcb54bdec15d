//! Agents: a name, their settings (persona, voice, instructions, returns, tools, …: the model's
//! `AgentFields`, stored as JSON)
//! and the numbers they call from, which must be their organisation's own. The tests here
//! cover trunks and numbers too, since an agent needs a number and a number a trunk.

use dialtone_model::AgentFields;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::{json_of, opt_uuid_of, org_of, uuid_of};
use crate::{Result, Storage, StorageError, now_ms};

/// An agent: its configuration object plus attached numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Id.
    pub id: Uuid,
    /// The organisation it belongs to.
    pub org_id: Uuid,
    /// Name.
    pub name: String,
    /// Everything else the API accepted (persona, voice, instructions, returns, tools, ...).
    pub config: AgentFields,
    /// Attached numbers.
    pub number_ids: Vec<Uuid>,
    /// The caller ID used by default.
    pub primary_number_id: Option<Uuid>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// Fields of a new agent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    /// Name.
    pub name: String,
    /// Configuration object.
    pub config: AgentFields,
    /// Attached numbers.
    pub number_ids: Vec<Uuid>,
    /// Default caller ID.
    pub primary_number_id: Option<Uuid>,
}

/// The settings of an agent's row (its `config` column).
pub(crate) fn agent_config(row: &AnyRow) -> Result<AgentFields> {
    match json_of(row, "config")? {
        serde_json::Value::Object(config) => AgentFields::from_stored(config),
        _ => AgentFields::from_stored(serde_json::Map::new()),
    }
    .map_err(|e| StorageError::Corrupt {
        column: "agents.config",
        detail: format!("the setting `{}` is unreadable", e.field),
    })
}

impl Storage {
    /// Numbers that are not `org`'s are `NotFound`, like numbers that do not exist.
    async fn own_numbers(&self, org: Uuid, a: &NewAgent) -> Result<()> {
        for n in a.number_ids.iter().chain(a.primary_number_id.iter()) {
            if self.get_number(*n).await?.org_id != org {
                return Err(StorageError::NotFound {
                    entity: "number",
                    id: n.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Creates an agent of organisation `org` with its numbers.
    pub async fn create_agent(&self, org: Uuid, a: NewAgent) -> Result<Agent> {
        self.own_numbers(org, &a).await?;
        let now = now_ms();
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO agents (id, name, config, primary_number_id, created_at, updated_at, \
             org_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(&a.name)
        .bind(serde_json::to_string(&a.config).unwrap_or_else(|_| "{}".into()))
        .bind(a.primary_number_id.map(|n| n.to_string()))
        .bind(now)
        .bind(now)
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?;
        for n in &a.number_ids {
            sqlx::query("INSERT INTO agent_numbers (agent_id, number_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id.to_string())
                .bind(n.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.get_agent(id).await
    }

    /// One agent.
    pub async fn get_agent(&self, id: Uuid) -> Result<Agent> {
        let row = sqlx::query("SELECT * FROM agents WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "agent",
                id: id.to_string(),
            })?;
        let numbers = sqlx::query(
            "SELECT number_id FROM agent_numbers WHERE agent_id = $1 ORDER BY number_id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(Agent {
            id: uuid_of(&row, "id")?,
            org_id: org_of(&row)?,
            name: row.try_get("name")?,
            config: agent_config(&row)?,
            number_ids: numbers
                .iter()
                .map(|r| uuid_of(r, "number_id"))
                .collect::<Result<_>>()?,
            primary_number_id: opt_uuid_of(&row, "primary_number_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// Every agent of organisation `org`, oldest first.
    pub async fn list_agents(&self, org: Uuid) -> Result<Vec<Agent>> {
        let rows = sqlx::query(
            "SELECT id FROM agents WHERE deleted_at IS NULL AND org_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut agents = Vec::with_capacity(rows.len());
        for row in &rows {
            agents.push(self.get_agent(uuid_of(row, "id")?).await?);
        }
        Ok(agents)
    }

    /// Replaces an agent's name, configuration and numbers.
    pub async fn update_agent(&self, id: Uuid, a: NewAgent) -> Result<Agent> {
        let org = self.get_agent(id).await?.org_id;
        self.own_numbers(org, &a).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE agents SET name = $1, config = $2, primary_number_id = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(&a.name)
        .bind(serde_json::to_string(&a.config).unwrap_or_else(|_| "{}".into()))
        .bind(a.primary_number_id.map(|n| n.to_string()))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM agent_numbers WHERE agent_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for n in &a.number_ids {
            sqlx::query("INSERT INTO agent_numbers (agent_id, number_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id.to_string())
                .bind(n.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.get_agent(id).await
    }

    /// Deletes an agent; its calls keep their record, its numbers are free again.
    pub async fn delete_agent(&self, id: Uuid) -> Result<()> {
        self.get_agent(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE agents SET deleted_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM agent_numbers WHERE agent_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{call, on_both, org, trunk};

    on_both!(trunks_numbers_agents_round_trip);
    async fn trunks_numbers_agents_round_trip(s: Storage) {
        let t = s.create_trunk(org(&s).await, trunk("main")).await.unwrap();
        assert_eq!(s.get_trunk(t.id).await.unwrap(), t);
        assert!(!format!("{t:?}").contains("secret"));
        assert!(!format!("{:?}", trunk("x")).contains("secret"));
        assert!(matches!(
            s.create_trunk(org(&s).await, trunk("main")).await,
            Err(StorageError::Conflict {
                entity: "trunk",
                field: "name"
            })
        ));
        let n = s
            .create_number(org(&s).await, "+15550001111", t.id)
            .await
            .unwrap();
        assert!(matches!(
            s.create_number(org(&s).await, "+15550001111", t.id).await,
            Err(StorageError::Conflict { .. })
        ));
        assert!(matches!(
            s.create_number(org(&s).await, "+15550002222", Uuid::now_v7())
                .await,
            Err(StorageError::NotFound {
                entity: "trunk",
                ..
            })
        ));
        let a = s
            .create_agent(
                org(&s).await,
                NewAgent {
                    name: "agent".into(),
                    config: AgentFields {
                        voice: Some("x".into()),
                        ..AgentFields::default()
                    },
                    number_ids: vec![n.id],
                    primary_number_id: Some(n.id),
                },
            )
            .await
            .unwrap();
        assert_eq!(a.number_ids, vec![n.id]);
        assert_eq!(s.get_agent(a.id).await.unwrap(), a);
    }

    on_both!(changes_and_deletes_keep_history_and_refuse_what_is_in_use);
    async fn changes_and_deletes_keep_history_and_refuse_what_is_in_use(s: Storage) {
        let c = call(&s).await;
        let t = s.get_trunk(c.trunk_id).await.unwrap();
        let mut changed = trunk("t2");
        changed.port = 5080;
        changed.password = None;
        changed.transport = crate::TrunkTransport::Tls;
        changed.security = crate::TrunkSecurity {
            tls_ca_pem: Some("ca".into()),
            tls_verify: false,
            tls_client_cert_pem: Some("cert".into()),
            tls_client_key_pem: Some("key".into()),
            srtp: crate::SrtpMode::Required,
            transfer_sip_domains: vec!["pbx.example.com".into()],
        };
        changed.codecs = Some(vec![crate::Codec::G722, crate::Codec::Pcma]);
        assert_eq!(t.codecs, None);
        assert_eq!(t.offered_codecs(), crate::Codec::DEFAULT_PREFERENCE);
        let t2 = s.update_trunk(t.id, changed.clone()).await.unwrap();
        assert_eq!(
            (t2.name.as_str(), t2.port, t2.password.as_deref()),
            ("t2", 5080, None)
        );
        assert_eq!(t2.transport, changed.transport);
        assert_eq!(t2.security, changed.security);
        assert_eq!(
            t2.offered_codecs(),
            [crate::Codec::G722, crate::Codec::Pcma]
        );
        assert!(t2.updated_at >= t.updated_at);
        // In use: the trunk carries a number, the number an agent.
        assert!(matches!(
            s.delete_trunk(t.id).await,
            Err(StorageError::InUse {
                entity: "trunk",
                ..
            })
        ));
        let n = s.list_numbers(org(&s).await).await.unwrap().remove(0);
        assert!(matches!(
            s.delete_number(n.id).await,
            Err(StorageError::InUse {
                entity: "number",
                ..
            })
        ));
        let a = s.list_agents(org(&s).await).await.unwrap().remove(0);
        let mut emptied = NewAgent {
            name: "renamed".into(),
            config: AgentFields {
                persona: Some("p".into()),
                ..AgentFields::default()
            },
            number_ids: Vec::new(),
            primary_number_id: None,
        };
        let a2 = s.update_agent(a.id, emptied.clone()).await.unwrap();
        assert_eq!((a2.name.as_str(), a2.number_ids.len()), ("renamed", 0));
        emptied.number_ids = vec![Uuid::now_v7()];
        assert!(matches!(
            s.update_agent(a.id, emptied).await,
            Err(StorageError::NotFound {
                entity: "number",
                ..
            })
        ));
        // Deleted in order; gone from reads and lists, names and numbers free again; the
        // call keeps its record.
        s.delete_number(n.id).await.unwrap();
        s.delete_agent(a.id).await.unwrap();
        s.delete_trunk(t.id).await.unwrap();
        assert!(matches!(
            s.get_trunk(t.id).await,
            Err(StorageError::NotFound { .. })
        ));
        assert!(matches!(
            s.get_agent(a.id).await,
            Err(StorageError::NotFound { .. })
        ));
        assert!(s.list_trunks(org(&s).await).await.unwrap().is_empty());
        assert!(s.list_numbers(org(&s).await).await.unwrap().is_empty());
        assert!(s.list_agents(org(&s).await).await.unwrap().is_empty());
        let again = s.create_trunk(org(&s).await, trunk("t2")).await.unwrap();
        s.create_number(org(&s).await, &n.e164, again.id)
            .await
            .unwrap();
        assert_eq!(s.get_call(c.id).await.unwrap().trunk_id, t.id);
    }
}
