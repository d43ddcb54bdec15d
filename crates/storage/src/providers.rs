//! Providers: the language and speech services an organisation's agents use. A name is unique
//! within its organisation; agents name a provider by its name or its id, in their `llm`,
//! `stt` and `tts` settings (stored in the agent's JSON `config`), so those references are
//! checked here in Rust over the organisation's agents:
//!
//! - a provider an agent names (either way) cannot be deleted ([`StorageError::ProviderInUse`]);
//! - a provider an agent names *by its name* cannot be renamed either: the rename is refused
//!   the same way, naming the agents, rather than leaving them pointing at nothing (pointing
//!   them at the provider's id first makes the rename possible).
//!
//! The check and the write share one transaction, but an agent written at the same moment
//! through another connection is not locked out of it (neither backend locks the agents'
//! rows for this): such an agent can still name a provider that was just deleted or renamed,
//! and [`Storage::find_provider`] then finds none when a call needs it.
//!
//! The API key is stored but shown by no `Debug`, and the API's view has no such field.
//! Deleting a provider removes its row (calls do not refer to providers).

use dialtone_model::{AgentFields, Provider, ProviderKind};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use crate::agents::agent_config;
use crate::rows::{org_of, unique_violation, uuid_of};
use crate::{Result, Storage, StorageError, now_ms};

/// Fields of a new provider (or all of a changed one). `Debug` does not show the API key.
#[derive(Clone, PartialEq, Eq)]
pub struct NewProvider {
    /// Unique name within the organisation.
    pub name: String,
    /// The protocol it speaks.
    pub kind: ProviderKind,
    /// The service's base URL.
    pub base_url: String,
    /// The service's API key.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for NewProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProvider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A provider write that hit the unique name: `Conflict`.
fn provider_name_taken(e: sqlx::Error) -> StorageError {
    if unique_violation(&e) {
        StorageError::Conflict {
            entity: "provider",
            field: "name",
        }
    } else {
        e.into()
    }
}

/// The references to a provider in an agent's settings (`llm`, `stt`, `tts`).
fn provider_references(config: &AgentFields) -> impl Iterator<Item = &str> {
    let llm = config.llm.as_ref().map(|s| s.provider.as_str());
    let stt = config.stt.as_ref().map(|s| s.provider.as_str());
    let tts = config.tts.as_ref().map(|s| s.provider.as_str());
    [llm, stt, tts].into_iter().flatten()
}

impl Storage {
    fn provider_from(row: &AnyRow) -> Result<Provider> {
        let kind: String = row.try_get("kind")?;
        Ok(Provider {
            id: uuid_of(row, "id")?,
            org_id: org_of(row)?,
            name: row.try_get("name")?,
            kind: kind
                .parse()
                .map_err(|e: dialtone_model::UnknownName| StorageError::Corrupt {
                    column: "providers.kind",
                    detail: e.to_string(),
                })?,
            base_url: row.try_get("base_url")?,
            api_key: row.try_get("api_key")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// Creates a provider of organisation `org`.
    pub async fn create_provider(&self, org: Uuid, p: NewProvider) -> Result<Provider> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO providers (id, org_id, name, kind, base_url, api_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(org.to_string())
        .bind(&p.name)
        .bind(p.kind.as_str())
        .bind(&p.base_url)
        .bind(&p.api_key)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(provider_name_taken)?;
        self.get_provider(id).await
    }

    /// One provider, by id (the API checks it is the caller's organisation's).
    pub async fn get_provider(&self, id: Uuid) -> Result<Provider> {
        let row = sqlx::query("SELECT * FROM providers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "provider",
                id: id.to_string(),
            })?;
        Self::provider_from(&row)
    }

    /// Every provider of organisation `org`, oldest first.
    pub async fn list_providers(&self, org: Uuid) -> Result<Vec<Provider>> {
        let rows = sqlx::query("SELECT * FROM providers WHERE org_id = $1 ORDER BY created_at, id")
            .bind(org.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::provider_from).collect()
    }

    /// The provider of organisation `org` that `reference` names: its id (as a UUID string)
    /// or its name; an id wins over a name that happens to read like another provider's id.
    /// What the agents' settings are checked with, and what the engine resolves them with.
    pub async fn find_provider(&self, org: Uuid, reference: &str) -> Result<Option<Provider>> {
        let rows = sqlx::query(
            "SELECT * FROM providers WHERE org_id = $1 AND (id = $2 OR name = $2) \
             ORDER BY created_at, id",
        )
        .bind(org.to_string())
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        let found = rows
            .iter()
            .map(Self::provider_from)
            .collect::<Result<Vec<_>>>()?;
        let by_id = found.iter().position(|p| p.id.to_string() == reference);
        Ok(match by_id {
            Some(i) => found.into_iter().nth(i),
            None => found.into_iter().next(),
        })
    }

    /// The names of the agents of `provider`'s organisation whose settings name it: by its
    /// name, and with `by_id` by its id too. Read in `tx`.
    async fn agents_naming(
        tx: &mut Transaction<'static, Any>,
        provider: &Provider,
        by_id: bool,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT name, config FROM agents WHERE org_id = $1 AND deleted_at IS NULL \
             ORDER BY created_at, id",
        )
        .bind(provider.org_id.to_string())
        .fetch_all(&mut **tx)
        .await?;
        let id = provider.id.to_string();
        let mut names = Vec::new();
        for row in &rows {
            let config = agent_config(row)?;
            if provider_references(&config).any(|r| r == provider.name || (by_id && r == id)) {
                names.push(row.try_get("name")?);
            }
        }
        Ok(names)
    }

    /// Replaces a provider's fields. Renaming one that agents name by its name is refused
    /// ([`StorageError::ProviderInUse`], naming them): point them at its id first.
    pub async fn update_provider(&self, id: Uuid, p: NewProvider) -> Result<Provider> {
        let current = self.get_provider(id).await?;
        let mut tx = self.pool.begin().await?;
        if p.name != current.name {
            let agents = Self::agents_naming(&mut tx, &current, false).await?;
            if !agents.is_empty() {
                return Err(StorageError::ProviderInUse {
                    provider: current.name,
                    action: "renamed",
                    agents,
                });
            }
        }
        sqlx::query(
            "UPDATE providers SET name = $1, kind = $2, base_url = $3, api_key = $4 WHERE id = $5",
        )
        .bind(&p.name)
        .bind(p.kind.as_str())
        .bind(&p.base_url)
        .bind(&p.api_key)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(provider_name_taken)?;
        tx.commit().await?;
        self.get_provider(id).await
    }

    /// Deletes a provider no agent names (by its name or its id); else
    /// [`StorageError::ProviderInUse`], naming the agents.
    pub async fn delete_provider(&self, id: Uuid) -> Result<()> {
        let current = self.get_provider(id).await?;
        let mut tx = self.pool.begin().await?;
        let agents = Self::agents_naming(&mut tx, &current, true).await?;
        if !agents.is_empty() {
            return Err(StorageError::ProviderInUse {
                provider: current.name,
                action: "deleted",
                agents,
            });
        }
        sqlx::query("DELETE FROM providers WHERE id = $1")
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
    use crate::NewAgent;
    use crate::tests::{on_both, org};
    use dialtone_model::{LlmSetting, SttSetting, TtsSetting};

    fn openai(name: &str) -> NewProvider {
        NewProvider {
            name: name.into(),
            kind: ProviderKind::OpenAi,
            base_url: ProviderKind::OpenAi.default_base_url().into(),
            api_key: Some("sk-secret".into()),
        }
    }

    /// An agent of `org` whose `llm` names `llm` and whose `tts` names `tts`.
    async fn agent_naming(s: &Storage, org: Uuid, name: &str, llm: &str, tts: &str) -> Uuid {
        let config = AgentFields {
            brain: Some(dialtone_model::BUILTIN_AGENT.into()),
            llm: Some(LlmSetting {
                provider: llm.into(),
                model: "m".into(),
                temperature: None,
                max_tokens: None,
            }),
            stt: Some(SttSetting {
                provider: llm.into(),
                model: "m".into(),
            }),
            tts: Some(TtsSetting {
                provider: tts.into(),
                model: None,
            }),
            ..AgentFields::default()
        };
        let agent = NewAgent {
            name: name.into(),
            config,
            number_ids: Vec::new(),
            primary_number_id: None,
        };
        s.create_agent(org, agent).await.unwrap().id
    }

    on_both!(providers_round_trip_per_organisation);
    async fn providers_round_trip_per_organisation(s: Storage) {
        let home = org(&s).await;
        let other = s.create_organization("other", None, None).await.unwrap().id;
        let p = s.create_provider(home, openai("openai")).await.unwrap();
        assert_eq!(s.get_provider(p.id).await.unwrap(), p);
        assert_eq!((p.org_id, p.kind), (home, ProviderKind::OpenAi));
        assert!(!format!("{p:?}").contains("sk-secret"));
        assert!(!format!("{:?}", openai("x")).contains("sk-secret"));
        // Names are unique within an organisation, not across them.
        assert!(matches!(
            s.create_provider(home, openai("openai")).await,
            Err(StorageError::Conflict {
                entity: "provider",
                field: "name"
            })
        ));
        let theirs = s.create_provider(other, openai("openai")).await.unwrap();
        assert_eq!(s.list_providers(home).await.unwrap(), vec![p.clone()]);
        assert_eq!(s.list_providers(other).await.unwrap(), vec![theirs.clone()]);
        // Found by name or id, in its own organisation only.
        let found = |org, r: String| {
            let s = s.clone();
            async move { s.find_provider(org, &r).await.unwrap().map(|p| p.id) }
        };
        assert_eq!(found(home, "openai".into()).await, Some(p.id));
        assert_eq!(found(home, p.id.to_string()).await, Some(p.id));
        assert_eq!(found(other, "openai".into()).await, Some(theirs.id));
        assert_eq!(found(other, p.id.to_string()).await, None);
        assert_eq!(found(home, "nope".into()).await, None);
        // An id wins over a name that reads like it.
        let lookalike = s
            .create_provider(home, openai(&theirs.id.to_string()))
            .await
            .unwrap();
        assert_eq!(found(home, theirs.id.to_string()).await, Some(lookalike.id));
        let named_like_p = s
            .create_provider(home, openai(&p.id.to_string()))
            .await
            .unwrap();
        assert_eq!(found(home, p.id.to_string()).await, Some(p.id));
        // Changed whole; the key can be cleared.
        let mut changed = openai("groq");
        changed.base_url = "https://api.groq.com/openai/v1".into();
        changed.api_key = None;
        let p2 = s.update_provider(p.id, changed).await.unwrap();
        assert_eq!(
            (
                p2.name.as_str(),
                p2.base_url.as_str(),
                p2.api_key.as_deref()
            ),
            ("groq", "https://api.groq.com/openai/v1", None)
        );
        assert_eq!(p2.created_at, p.created_at);
        assert!(matches!(
            s.update_provider(p.id, openai(&lookalike.name)).await,
            Err(StorageError::Conflict { .. })
        ));
        for gone in [lookalike.id, named_like_p.id, p.id] {
            s.delete_provider(gone).await.unwrap();
            assert!(matches!(
                s.get_provider(gone).await,
                Err(StorageError::NotFound {
                    entity: "provider",
                    ..
                })
            ));
        }
        assert!(s.list_providers(home).await.unwrap().is_empty());
        assert!(matches!(
            s.delete_provider(p.id).await,
            Err(StorageError::NotFound { .. })
        ));
        // The name is free again.
        s.create_provider(home, openai("groq")).await.unwrap();
    }

    on_both!(a_provider_agents_name_is_neither_deleted_nor_renamed);
    async fn a_provider_agents_name_is_neither_deleted_nor_renamed(s: Storage) {
        let home = org(&s).await;
        let other = s.create_organization("other", None, None).await.unwrap().id;
        let by_name = s.create_provider(home, openai("openai")).await.unwrap();
        let by_id = s.create_provider(home, openai("speech")).await.unwrap();
        let agent = agent_naming(&s, home, "sales", "openai", &by_id.id.to_string()).await;
        // Another organisation's agent naming the same words changes nothing here.
        let free = s.create_provider(home, openai("free")).await.unwrap();
        agent_naming(&s, other, "theirs", "free", dialtone_model::BUILTIN_ESPEAK).await;
        for (provider, action) in [(&by_name, "deleted"), (&by_id, "deleted")] {
            match s.delete_provider(provider.id).await {
                Err(StorageError::ProviderInUse {
                    action: a, agents, ..
                }) => assert_eq!((a, agents), (action, vec!["sales".to_owned()])),
                other => panic!("{other:?}"),
            }
        }
        // Renaming: refused for a name reference, fine for an id reference.
        let rename = |p: &Provider, name: &str| NewProvider {
            name: name.into(),
            ..openai(&p.name)
        };
        let e = s
            .update_provider(by_name.id, rename(&by_name, "renamed"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StorageError::ProviderInUse { action: "renamed", agents, .. } if agents == &["sales"]),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"sales\""), "{e}");
        let mut same_name = rename(&by_name, "openai");
        same_name.base_url = "https://llm.example.com/v1".into();
        s.update_provider(by_name.id, same_name).await.unwrap();
        let renamed = s
            .update_provider(by_id.id, rename(&by_id, "voice"))
            .await
            .unwrap();
        assert_eq!(renamed.name, "voice");
        s.delete_provider(free.id).await.unwrap();
        // Once the agent is gone, so can the providers be.
        s.delete_agent(agent).await.unwrap();
        s.delete_provider(by_name.id).await.unwrap();
        s.delete_provider(by_id.id).await.unwrap();
    }
}
