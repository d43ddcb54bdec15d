//! Phone numbers: an E.164 number, unique, on one of its organisation's trunks; a number an
//! agent still uses cannot be deleted. Tested with trunks and agents, in `agents.rs`.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::{org_of, unique_violation, uuid_of};
use crate::{Result, Storage, StorageError, now_ms};

/// A phone number on a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    /// Id.
    pub id: Uuid,
    /// The organisation it belongs to.
    pub org_id: Uuid,
    /// E.164.
    pub e164: String,
    /// The trunk that carries it.
    pub trunk_id: Uuid,
    /// Creation time.
    pub created_at: i64,
}

impl Storage {
    /// Creates a number of organisation `org` on one of its trunks.
    pub async fn create_number(&self, org: Uuid, e164: &str, trunk_id: Uuid) -> Result<Number> {
        if self.get_trunk(trunk_id).await?.org_id != org {
            return Err(StorageError::NotFound {
                entity: "trunk",
                id: trunk_id.to_string(),
            });
        }
        let n = Number {
            id: Uuid::now_v7(),
            org_id: org,
            e164: e164.to_owned(),
            trunk_id,
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO numbers (id, e164, trunk_id, created_at, org_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(n.id.to_string())
        .bind(&n.e164)
        .bind(trunk_id.to_string())
        .bind(n.created_at)
        .bind(org.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StorageError::Conflict {
                    entity: "number",
                    field: "e164",
                }
            } else {
                e.into()
            }
        })?;
        Ok(n)
    }

    /// One number.
    pub async fn get_number(&self, id: Uuid) -> Result<Number> {
        let row = sqlx::query("SELECT * FROM numbers WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "number",
                id: id.to_string(),
            })?;
        Self::number_from(&row)
    }

    fn number_from(row: &AnyRow) -> Result<Number> {
        Ok(Number {
            id: uuid_of(row, "id")?,
            org_id: org_of(row)?,
            e164: row.try_get("e164")?,
            trunk_id: uuid_of(row, "trunk_id")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// Every number of organisation `org`, oldest first.
    pub async fn list_numbers(&self, org: Uuid) -> Result<Vec<Number>> {
        let rows = sqlx::query(
            "SELECT * FROM numbers WHERE deleted_at IS NULL AND org_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::number_from).collect()
    }

    /// Deletes a number no agent uses. Calls made from it keep their record.
    pub async fn delete_number(&self, id: Uuid) -> Result<()> {
        self.get_number(id).await?;
        self.delete_unless_used(
            id,
            ("number", "an agent (detach it from the agent first)"),
            "SELECT 1 FROM agent_numbers an JOIN agents a ON a.id = an.agent_id \
             WHERE an.number_id = $1 AND a.deleted_at IS NULL LIMIT 1",
            // The unique E.164 is freed for a new number; the old row stays for history.
            "UPDATE numbers SET deleted_at = $1, e164 = e164 || '#deleted-' || id WHERE id = $2",
        )
        .await
    }
}
