//! Organisations — the tenants every resource and key belongs to — and their API keys, of
//! which only the SHA-256 is stored ([`hash_key`]). A key has a [`KeyScope`]; it may expire,
//! and a revoked one is kept (with `revoked_at`) but never speaks for anyone again. Every
//! request's key is looked up here, in the database, so a revocation holds on every node at
//! once; its `last_used_at` is written at most once a minute ([`LAST_USED_RESOLUTION_MS`]), not
//! on every request. [`Storage::bootstrap_operator_key`] makes the operator's key an `operator`
//! key of the first organisation.

use dialtone_model::{CallStatus, KeyScope};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::{opt_u32, parse_req, uuid_of};
use crate::{Result, Storage, StorageError, now_ms};

/// How stale a key's `last_used_at` may get: a use within this long of the stored one writes
/// nothing.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// An organisation: the tenant every resource and key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Most of its calls in progress at once (beyond: they wait in `queued`).
    pub max_concurrent_calls: Option<u32>,
    /// Most dispatches per second (beyond: refused with a retry time).
    pub max_calls_per_second: Option<u32>,
    /// When it was disabled (its dispatches are refused); `None` while enabled.
    pub disabled_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
}

/// Who an API key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    /// The key.
    pub key_id: Uuid,
    /// The key's organisation.
    pub org_id: Uuid,
    /// What it may do.
    pub scope: KeyScope,
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// Its first characters, to recognise it by.
    pub prefix: String,
    /// What it may do.
    pub scope: KeyScope,
    /// Creation time.
    pub created_at: i64,
    /// When it stops working (`None`: never).
    pub expires_at: Option<i64>,
    /// When it was last used, to [`LAST_USED_RESOLUTION_MS`].
    pub last_used_at: Option<i64>,
}

/// A key just issued: the only time its secret is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// The stored key.
    pub stored: ApiKey,
    /// The secret (only its SHA-256 is stored).
    pub key: String,
}

/// The stored form of an API key: SHA-256, hex. Keys are long random tokens, so a fast hash is
/// the right one (there is nothing to brute-force).
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a key shows of itself: the first 10 characters of one issued here (`dtk_` and 24 of its
/// 256 random bits), only the first 4 of one chosen by the operator.
fn prefix_of(key: &str) -> String {
    let shown = if key.starts_with("dtk_") { 10 } else { 4 };
    key.chars().take(shown).collect()
}

impl Storage {
    /// Creates an organisation.
    pub async fn create_organization(
        &self,
        name: &str,
        max_concurrent_calls: Option<u32>,
        max_calls_per_second: Option<u32>,
    ) -> Result<Organization> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO organizations (id, name, max_concurrent_calls, max_calls_per_second, \
             created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(max_concurrent_calls.map(i64::from))
        .bind(max_calls_per_second.map(i64::from))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.get_organization(id).await
    }

    fn organization_from(row: &AnyRow) -> Result<Organization> {
        Ok(Organization {
            id: uuid_of(row, "id")?,
            name: row.try_get("name")?,
            max_concurrent_calls: opt_u32(row, "max_concurrent_calls")?,
            max_calls_per_second: opt_u32(row, "max_calls_per_second")?,
            disabled_at: row.try_get("disabled_at")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// One organisation.
    pub async fn get_organization(&self, id: Uuid) -> Result<Organization> {
        let row = sqlx::query("SELECT * FROM organizations WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "organization",
                id: id.to_string(),
            })?;
        Self::organization_from(&row)
    }

    /// Every organisation, oldest first.
    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        let rows = sqlx::query(
            "SELECT * FROM organizations WHERE deleted_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::organization_from).collect()
    }

    /// Disables an organisation (its dispatches are refused from now on; a second disable keeps
    /// the first time) or enables it again.
    pub async fn set_organization_disabled(
        &self,
        id: Uuid,
        disabled: bool,
    ) -> Result<Organization> {
        let change = if disabled {
            sqlx::query(
                "UPDATE organizations SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL",
            )
            .bind(now_ms())
        } else {
            sqlx::query("UPDATE organizations SET disabled_at = NULL WHERE id = $1")
        };
        change.bind(id.to_string()).execute(&self.pool).await?;
        self.get_organization(id).await
    }

    /// Removes an organisation: its keys are revoked at once, it is disabled and no longer
    /// shown; its calls stay on record. Refused while it has live calls, or holds operator
    /// keys (removing those would lock the platform out).
    pub async fn delete_organization(&self, id: Uuid) -> Result<()> {
        self.get_organization(id).await?;
        let live_statuses = CallStatus::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let in_use = |used_by| StorageError::InUse {
            entity: "organization",
            id: id.to_string(),
            used_by,
        };
        let live: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM calls WHERE org_id = $1 AND status IN ({live_statuses})"
        )))
        .bind(id.to_string())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        if live > 0 {
            return Err(in_use("live calls"));
        }
        let operators: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys \
             WHERE org_id = $1 AND scope = $2 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(KeyScope::Operator.as_str())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        if operators > 0 {
            return Err(in_use("operator keys"));
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE organizations SET deleted_at = $1, \
             disabled_at = COALESCE(disabled_at, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    fn key_from(row: &AnyRow) -> Result<ApiKey> {
        Ok(ApiKey {
            id: uuid_of(row, "id")?,
            org_id: uuid_of(row, "org_id")?,
            prefix: row.try_get("prefix")?,
            scope: parse_req(row, "scope", str::parse::<KeyScope>)?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    }

    async fn store_key(
        &self,
        org: Uuid,
        key: &str,
        scope: KeyScope,
        expires_at: Option<i64>,
    ) -> Result<IssuedKey> {
        let stored = ApiKey {
            id: Uuid::now_v7(),
            org_id: org,
            prefix: prefix_of(key),
            scope,
            created_at: now_ms(),
            expires_at,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, key_hash, prefix, scope, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(stored.id.to_string())
        .bind(org.to_string())
        .bind(hash_key(key))
        .bind(&stored.prefix)
        .bind(scope.as_str())
        .bind(stored.created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(IssuedKey {
            stored,
            key: key.to_owned(),
        })
    }

    /// Issues a new random key for `org` (256 random bits, `dtk_` then hex), working until
    /// `expires_at` (Unix ms) if given.
    pub async fn issue_key(
        &self,
        org: Uuid,
        scope: KeyScope,
        expires_at: Option<i64>,
    ) -> Result<IssuedKey> {
        self.get_organization(org).await?;
        let key = format!("dtk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.store_key(org, &key, scope, expires_at).await
    }

    /// The keys of `org` not revoked (expired ones included), oldest first.
    pub async fn list_keys(&self, org: Uuid) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE org_id = $1 AND revoked_at IS NULL \
             ORDER BY created_at, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::key_from).collect()
    }

    /// One key of `org`, not revoked (another organisation's is `NotFound`).
    pub async fn get_key(&self, org: Uuid, id: Uuid) -> Result<ApiKey> {
        let row = sqlx::query(
            "SELECT * FROM api_keys WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StorageError::NotFound {
            entity: "key",
            id: id.to_string(),
        })?;
        Self::key_from(&row)
    }

    /// Revokes a key of `org`: from now on it speaks for no one, on every node (each request's
    /// key is looked up here).
    pub async fn revoke_key(&self, org: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .bind(org.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound {
                entity: "key",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Who `key` speaks for: `None` unless it is a key, not revoked and not expired. Notes the
    /// use when the stored `last_used_at` is older than [`LAST_USED_RESOLUTION_MS`].
    pub async fn key_owner(&self, key: &str) -> Result<Option<KeyOwner>> {
        let Some(row) = sqlx::query(
            "SELECT id, org_id, scope, expires_at, last_used_at, revoked_at FROM api_keys \
             WHERE key_hash = $1",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let now = now_ms();
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        let expires_at: Option<i64> = row.try_get("expires_at")?;
        if revoked.is_some() || expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        let owner = KeyOwner {
            key_id: uuid_of(&row, "id")?,
            org_id: uuid_of(&row, "org_id")?,
            scope: parse_req(&row, "scope", str::parse::<KeyScope>)?,
        };
        let last_used: Option<i64> = row.try_get("last_used_at")?;
        if last_used.is_none_or(|at| at <= now - LAST_USED_RESOLUTION_MS) {
            // Conditional, so nodes that race here write once between them.
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(now)
            .bind(owner.key_id.to_string())
            .bind(now - LAST_USED_RESOLUTION_MS)
            .execute(&self.pool)
            .await?;
        }
        Ok(Some(owner))
    }

    /// Makes `key` (the operator's `DIALTONE_API_KEY`) an `operator` key: of the first
    /// organisation, created as `default` on a fresh database. Resources from before
    /// organisations existed join that organisation. Returns the key's organisation. A key
    /// that was revoked stays revoked: [`StorageError::KeyRevoked`].
    pub async fn bootstrap_operator_key(&self, key: &str) -> Result<Organization> {
        let known = sqlx::query("SELECT id, org_id, revoked_at FROM api_keys WHERE key_hash = $1")
            .bind(hash_key(key))
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = known {
            let revoked: Option<i64> = row.try_get("revoked_at")?;
            if revoked.is_some() {
                return Err(StorageError::KeyRevoked {
                    id: uuid_of(&row, "id")?.to_string(),
                });
            }
            return self.get_organization(uuid_of(&row, "org_id")?).await;
        }
        let org = match self.list_organizations().await?.into_iter().next() {
            Some(org) => org,
            None => self.create_organization("default", None, None).await?,
        };
        self.store_key(org.id, key, KeyScope::Operator, None)
            .await?;
        for table in [
            "UPDATE trunks SET org_id = $1 WHERE org_id IS NULL",
            "UPDATE numbers SET org_id = $1 WHERE org_id IS NULL",
            "UPDATE agents SET org_id = $1 WHERE org_id IS NULL",
            "UPDATE calls SET org_id = $1 WHERE org_id IS NULL",
        ] {
            sqlx::query(table)
                .bind(org.id.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(org)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{drop_schema, on_both, postgres_schema, trunk};

    /// Runs `case` on an empty SQLite file and, where one answers, an empty PostgreSQL schema:
    /// for the cases that open a database more than once (as several nodes, or across an
    /// upgrade).
    async fn on_both_urls<F: std::future::Future<Output = ()>>(case: impl Fn(String) -> F) {
        let dir = std::env::temp_dir().join(format!("dialtone-keys-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        case(format!("sqlite://{}?mode=rwc", dir.join("d.db").display())).await;
        let _ = std::fs::remove_dir_all(dir);
        if let Some((url, schema)) = postgres_schema().await {
            case(url.clone()).await;
            drop_schema(&Storage::open(&url).await.unwrap(), &schema).await;
        }
    }

    #[tokio::test]
    async fn a_revocation_on_one_node_holds_on_another_at_once() {
        on_both_urls(|url| async move {
            let (one, two) = (
                Storage::open(&url).await.unwrap(),
                Storage::open(&url).await.unwrap(),
            );
            let acme = one.create_organization("acme", None, None).await.unwrap();
            let issued = one.issue_key(acme.id, KeyScope::Admin, None).await.unwrap();
            assert!(two.key_owner(&issued.key).await.unwrap().is_some());
            one.revoke_key(acme.id, issued.stored.id).await.unwrap();
            assert_eq!(two.key_owner(&issued.key).await.unwrap(), None);
            one.close().await;
            two.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn existing_admin_keys_become_operator_in_the_first_organisation_else_admin() {
        on_both_urls(|url| async move {
            // The schema as the previous release left it, with its keys.
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            if url.starts_with("sqlite:") {
                sqlx::migrate!("migrations/sqlite").run_to(9, &pool).await
            } else {
                sqlx::migrate!("migrations/postgres").run_to(9, &pool).await
            }
            .unwrap();
            let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
            for (id, name, at) in [(first, "default", 1_i64), (second, "acme", 2)] {
                sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(id.to_string())
                    .bind(name)
                    .bind(at)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            let keys = [
                ("operator-key", first, 1_i64),
                ("dtk_first_plain", first, 0),
                ("dtk_second_admin", second, 1),
                ("dtk_second_plain", second, 0),
            ];
            for (key, org, admin) in keys {
                sqlx::query(
                    "INSERT INTO api_keys (id, org_id, key_hash, prefix, admin, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 3)",
                )
                .bind(Uuid::now_v7().to_string())
                .bind(org.to_string())
                .bind(hash_key(key))
                .bind(key.chars().take(10).collect::<String>())
                .bind(admin)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
            let s = Storage::open(&url).await.unwrap();
            let scope = |key: &'static str| {
                let s = s.clone();
                async move { s.key_owner(key).await.unwrap().unwrap().scope }
            };
            assert_eq!(scope("operator-key").await, KeyScope::Operator);
            assert_eq!(scope("dtk_first_plain").await, KeyScope::Standard);
            assert_eq!(scope("dtk_second_admin").await, KeyScope::Admin);
            assert_eq!(scope("dtk_second_plain").await, KeyScope::Standard);
            // The operator's own key now shows only 4 characters; issued ones keep 10.
            let prefixes: Vec<String> = s
                .list_keys(first)
                .await
                .unwrap()
                .into_iter()
                .map(|k| k.prefix)
                .collect();
            assert_eq!(prefixes, ["oper", "dtk_first_"]);
            // The operator's key bootstraps as it was: no second key, same organisation.
            assert_eq!(
                s.bootstrap_operator_key("operator-key").await.unwrap().id,
                first
            );
            assert_eq!(s.list_keys(first).await.unwrap().len(), 2);
            s.close().await;
        })
        .await;
    }

    on_both!(keys_are_stored_hashed_and_name_their_organisation);
    async fn keys_are_stored_hashed_and_name_their_organisation(s: Storage) {
        let admin_org = s.bootstrap_operator_key("operator-key").await.unwrap();
        // Bootstrapping again with the same key changes nothing.
        assert_eq!(
            s.bootstrap_operator_key("operator-key").await.unwrap(),
            admin_org
        );
        assert_eq!(admin_org.name, "default");
        let owner = s.key_owner("operator-key").await.unwrap().unwrap();
        assert_eq!(
            (owner.org_id, owner.scope),
            (admin_org.id, KeyScope::Operator)
        );
        assert_eq!(s.key_owner("operator-kez").await.unwrap(), None);
        let other = s
            .create_organization("acme", Some(3), Some(5))
            .await
            .unwrap();
        assert_eq!(
            (other.max_concurrent_calls, other.max_calls_per_second),
            (Some(3), Some(5))
        );
        let issued = s
            .issue_key(other.id, KeyScope::Standard, None)
            .await
            .unwrap();
        assert!(issued.key.starts_with("dtk_") && issued.key.len() == 68);
        let owner = s.key_owner(&issued.key).await.unwrap().unwrap();
        assert_eq!(
            (owner.key_id, owner.org_id, owner.scope),
            (issued.stored.id, other.id, KeyScope::Standard)
        );
        // Only the hash is in the database.
        let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_all(&s.pool)
            .await
            .unwrap();
        assert!(stored.contains(&hash_key(&issued.key)));
        assert!(!stored.iter().any(|h| h.contains(&issued.key)));
        assert!(matches!(
            s.issue_key(Uuid::now_v7(), KeyScope::Standard, None).await,
            Err(StorageError::NotFound {
                entity: "organization",
                ..
            })
        ));
        // Resources are per organisation; names are unique within one.
        s.create_trunk(admin_org.id, trunk("shared-name"))
            .await
            .unwrap();
        s.create_trunk(other.id, trunk("shared-name"))
            .await
            .unwrap();
        assert!(matches!(
            s.create_trunk(other.id, trunk("shared-name")).await,
            Err(StorageError::Conflict {
                entity: "trunk",
                ..
            })
        ));
        let t = s.create_trunk(other.id, trunk("acme-trunk")).await.unwrap();
        assert_eq!(t.org_id, other.id);
        assert_eq!(s.list_trunks(other.id).await.unwrap().len(), 2);
        assert_eq!(s.list_trunks(admin_org.id).await.unwrap().len(), 1);
        assert!(matches!(
            s.create_number(admin_org.id, "+15550003333", t.id).await,
            Err(StorageError::NotFound {
                entity: "trunk",
                ..
            })
        ));
    }

    on_both!(keys_are_listed_without_secrets_and_revoked_at_once);
    async fn keys_are_listed_without_secrets_and_revoked_at_once(s: Storage) {
        let home = s.bootstrap_operator_key("operator-key").await.unwrap();
        let acme = s.create_organization("acme", None, None).await.unwrap();
        let admin = s.issue_key(acme.id, KeyScope::Admin, None).await.unwrap();
        let plain = s
            .issue_key(acme.id, KeyScope::Standard, Some(now_ms() + 3_600_000))
            .await
            .unwrap();
        let listed = s.list_keys(acme.id).await.unwrap();
        assert_eq!(listed, vec![admin.stored.clone(), plain.stored.clone()]);
        assert_eq!(plain.stored.prefix, plain.key.get(..10).unwrap());
        // The operator's own key shows no more than 4 of its characters, and lives in the
        // first organisation only.
        let home_keys = s.list_keys(home.id).await.unwrap();
        assert_eq!(home_keys.len(), 1);
        assert_eq!(
            (home_keys[0].prefix.as_str(), home_keys[0].scope),
            ("oper", KeyScope::Operator)
        );
        assert_eq!(
            s.get_key(acme.id, plain.stored.id).await.unwrap(),
            plain.stored
        );
        // A key is revoked in its own organisation only.
        assert!(matches!(
            s.revoke_key(home.id, plain.stored.id).await,
            Err(StorageError::NotFound { entity: "key", .. })
        ));
        assert!(s.key_owner(&plain.key).await.unwrap().is_some());
        s.revoke_key(acme.id, plain.stored.id).await.unwrap();
        // The very next lookup refuses it, and it is no longer listed nor found.
        assert_eq!(s.key_owner(&plain.key).await.unwrap(), None);
        assert_eq!(s.list_keys(acme.id).await.unwrap(), vec![admin.stored]);
        assert!(matches!(
            s.get_key(acme.id, plain.stored.id).await,
            Err(StorageError::NotFound { entity: "key", .. })
        ));
        assert!(matches!(
            s.revoke_key(acme.id, plain.stored.id).await,
            Err(StorageError::NotFound { entity: "key", .. })
        ));
        // The operator's key, once revoked, is not bootstrapped back to life.
        let operator = s.key_owner("operator-key").await.unwrap().unwrap();
        s.revoke_key(home.id, operator.key_id).await.unwrap();
        assert_eq!(s.key_owner("operator-key").await.unwrap(), None);
        assert!(matches!(
            s.bootstrap_operator_key("operator-key").await,
            Err(StorageError::KeyRevoked { id }) if id == operator.key_id.to_string()
        ));
    }

    on_both!(an_expired_key_speaks_for_no_one);
    async fn an_expired_key_speaks_for_no_one(s: Storage) {
        let acme = s.create_organization("acme", None, None).await.unwrap();
        let soon = s
            .issue_key(acme.id, KeyScope::Standard, Some(now_ms() + 60_000))
            .await
            .unwrap();
        assert!(s.key_owner(&soon.key).await.unwrap().is_some());
        sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(now_ms() - 1)
            .bind(soon.stored.id.to_string())
            .execute(&s.pool)
            .await
            .unwrap();
        assert_eq!(s.key_owner(&soon.key).await.unwrap(), None);
        // Still listed (with its expiry), for an admin to see and revoke.
        assert_eq!(s.list_keys(acme.id).await.unwrap().len(), 1);
    }

    on_both!(last_use_is_written_at_most_once_a_minute);
    async fn last_use_is_written_at_most_once_a_minute(s: Storage) {
        let acme = s.create_organization("acme", None, None).await.unwrap();
        let issued = s
            .issue_key(acme.id, KeyScope::Standard, None)
            .await
            .unwrap();
        let last_used = || async {
            s.get_key(acme.id, issued.stored.id)
                .await
                .unwrap()
                .last_used_at
        };
        assert_eq!(last_used().await, None);
        let before = now_ms();
        s.key_owner(&issued.key).await.unwrap().unwrap();
        let first = last_used().await.unwrap();
        assert!(first >= before && first <= now_ms());
        // Within the minute: no write at all (the stored time stays).
        for _ in 0..5 {
            s.key_owner(&issued.key).await.unwrap().unwrap();
        }
        assert_eq!(last_used().await, Some(first));
        // A minute later, the next use is written.
        let old = first - LAST_USED_RESOLUTION_MS;
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(old)
            .bind(issued.stored.id.to_string())
            .execute(&s.pool)
            .await
            .unwrap();
        s.key_owner(&issued.key).await.unwrap().unwrap();
        assert!(last_used().await.unwrap() >= first);
    }

    on_both!(a_disabled_organisation_keeps_its_first_disable_time);
    async fn a_disabled_organisation_keeps_its_first_disable_time(s: Storage) {
        let acme = s.create_organization("acme", None, None).await.unwrap();
        assert_eq!(acme.disabled_at, None);
        let disabled = s.set_organization_disabled(acme.id, true).await.unwrap();
        let at = disabled.disabled_at.unwrap();
        assert!(at >= acme.created_at);
        let again = s.set_organization_disabled(acme.id, true).await.unwrap();
        assert_eq!(again.disabled_at, Some(at));
        assert_eq!(
            s.set_organization_disabled(acme.id, false)
                .await
                .unwrap()
                .disabled_at,
            None
        );
        assert!(matches!(
            s.set_organization_disabled(Uuid::now_v7(), true).await,
            Err(StorageError::NotFound {
                entity: "organization",
                ..
            })
        ));
    }

    on_both!(a_removed_organisation_loses_its_keys_and_disappears);
    async fn a_removed_organisation_loses_its_keys_and_disappears(s: Storage) {
        let home = s.bootstrap_operator_key("test-operator-key").await.unwrap();
        assert!(matches!(
            s.delete_organization(home.id).await,
            Err(StorageError::InUse {
                used_by: "operator keys",
                ..
            })
        ));
        let acme = s.create_organization("acme", None, None).await.unwrap();
        let issued = s.issue_key(acme.id, KeyScope::Admin, None).await.unwrap();
        assert!(s.key_owner(&issued.key).await.unwrap().is_some());
        s.delete_organization(acme.id).await.unwrap();
        assert!(s.key_owner(&issued.key).await.unwrap_or(None).is_none());
        assert!(matches!(
            s.get_organization(acme.id).await,
            Err(StorageError::NotFound { .. })
        ));
        let listed = s.list_organizations().await.unwrap();
        assert!(listed.iter().all(|o| o.id != acme.id));
        assert!(matches!(
            s.delete_organization(acme.id).await,
            Err(StorageError::NotFound { .. })
        ));
    }
}
