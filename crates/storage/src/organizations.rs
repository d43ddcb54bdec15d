//! Organisations — the tenants every resource and key belongs to — and their API keys, of
//! which only the SHA-256 is stored ([`hash_key`]). [`Storage::bootstrap_admin_key`] makes the
//! operator's key an admin key of the first organisation.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::{opt_u32, uuid_of};
use crate::{Result, Storage, StorageError, now_ms};

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
    /// Creation time.
    pub created_at: i64,
}

/// Who an API key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    /// The key's organisation.
    pub org_id: Uuid,
    /// Whether it may manage organisations and keys.
    pub admin: bool,
}

/// A key just issued: the only time its secret is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// Id.
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// The secret (only its SHA-256 is stored).
    pub key: String,
    /// Its first characters, to recognise it by.
    pub prefix: String,
    /// Whether it may manage organisations and keys.
    pub admin: bool,
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
            created_at: row.try_get("created_at")?,
        })
    }

    /// One organisation.
    pub async fn get_organization(&self, id: Uuid) -> Result<Organization> {
        let row = sqlx::query("SELECT * FROM organizations WHERE id = $1")
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
        let rows = sqlx::query("SELECT * FROM organizations ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::organization_from).collect()
    }

    async fn store_key(&self, org: Uuid, key: &str, admin: bool) -> Result<IssuedKey> {
        let id = Uuid::now_v7();
        let prefix: String = key.chars().take(10).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, key_hash, prefix, admin, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(org.to_string())
        .bind(hash_key(key))
        .bind(&prefix)
        .bind(i64::from(admin))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(IssuedKey {
            id,
            org_id: org,
            key: key.to_owned(),
            prefix,
            admin,
        })
    }

    /// Issues a new random key for `org` (256 random bits, `dtk_` then hex).
    pub async fn issue_key(&self, org: Uuid, admin: bool) -> Result<IssuedKey> {
        self.get_organization(org).await?;
        let key = format!("dtk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.store_key(org, &key, admin).await
    }

    /// Who `key` speaks for, if it is a key at all.
    pub async fn key_owner(&self, key: &str) -> Result<Option<KeyOwner>> {
        let row = sqlx::query("SELECT org_id, admin FROM api_keys WHERE key_hash = $1")
            .bind(hash_key(key))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let admin: i64 = r.try_get("admin")?;
            Ok(KeyOwner {
                org_id: uuid_of(&r, "org_id")?,
                admin: admin != 0,
            })
        })
        .transpose()
    }

    /// Makes `key` (the operator's `DIALTONE_API_KEY`) an admin key: of the first organisation,
    /// created as `default` on a fresh database. Resources from before organisations existed
    /// join that organisation. Returns the key's organisation.
    pub async fn bootstrap_admin_key(&self, key: &str) -> Result<Organization> {
        if let Some(owner) = self.key_owner(key).await? {
            return self.get_organization(owner.org_id).await;
        }
        let org = match self.list_organizations().await?.into_iter().next() {
            Some(org) => org,
            None => self.create_organization("default", None, None).await?,
        };
        self.store_key(org.id, key, true).await?;
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
    use crate::tests::{on_both, trunk};

    on_both!(keys_are_stored_hashed_and_name_their_organisation);
    async fn keys_are_stored_hashed_and_name_their_organisation(s: Storage) {
        let admin_org = s.bootstrap_admin_key("operator-key").await.unwrap();
        // Bootstrapping again with the same key changes nothing.
        assert_eq!(
            s.bootstrap_admin_key("operator-key").await.unwrap(),
            admin_org
        );
        assert_eq!(admin_org.name, "default");
        let owner = s.key_owner("operator-key").await.unwrap().unwrap();
        assert_eq!((owner.org_id, owner.admin), (admin_org.id, true));
        assert_eq!(s.key_owner("operator-kez").await.unwrap(), None);
        let other = s
            .create_organization("acme", Some(3), Some(5))
            .await
            .unwrap();
        assert_eq!(
            (other.max_concurrent_calls, other.max_calls_per_second),
            (Some(3), Some(5))
        );
        let issued = s.issue_key(other.id, false).await.unwrap();
        assert!(issued.key.starts_with("dtk_") && issued.key.len() == 68);
        let owner = s.key_owner(&issued.key).await.unwrap().unwrap();
        assert_eq!((owner.org_id, owner.admin), (other.id, false));
        // Only the hash is in the database.
        let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_all(&s.pool)
            .await
            .unwrap();
        assert!(stored.contains(&hash_key(&issued.key)));
        assert!(!stored.iter().any(|h| h.contains(&issued.key)));
        assert!(matches!(
            s.issue_key(Uuid::now_v7(), false).await,
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
}
