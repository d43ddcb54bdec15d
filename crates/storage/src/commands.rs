//! Commands for a call another node owns: the node an API request reached writes the command
//! (its text is the engine's) for the call's owner ([`Storage::send_command`]); the owner
//! takes its commands up ([`Storage::take_commands`]), carries them out on its live calls and
//! writes each answer ([`Storage::answer_command`]), which the sender reads
//! ([`Storage::command_answer`]). Rows older than a minute are swept when commands are taken.

use sqlx::Row;
use uuid::Uuid;

use crate::rows::uuid_of;
use crate::{Result, Storage, now_ms};

/// How long a command row is kept.
const KEPT_MS: i64 = 60_000;

/// A command taken up by its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenCommand {
    /// The command's id (its answer goes there).
    pub id: Uuid,
    /// The call it is for.
    pub call_id: Uuid,
    /// What to do (the engine's JSON).
    pub command: String,
}

impl Storage {
    /// Writes `command` for call `call_id`, owned by `node`; returns its id.
    pub async fn send_command(&self, call_id: Uuid, node: &str, command: &str) -> Result<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO call_commands (id, call_id, node_id, command, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(call_id.to_string())
        .bind(node)
        .bind(command)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Takes up this node's waiting commands written within `fresh_for` (older ones, whose
    /// sender gave up, are left to the sweep), oldest first, each once; sweeps old rows.
    pub async fn take_commands(&self, fresh_for: std::time::Duration) -> Result<Vec<TakenCommand>> {
        let now = now_ms();
        let oldest = now - i64::try_from(fresh_for.as_millis()).unwrap_or(i64::MAX / 2);
        let rows = sqlx::query(
            "UPDATE call_commands SET taken_at = $1 WHERE node_id = $2 AND taken_at IS NULL \
             AND created_at >= $3 RETURNING id, call_id, command, created_at",
        )
        .bind(now)
        .bind(&*self.node)
        .bind(oldest)
        .fetch_all(&self.pool)
        .await?;
        if !rows.is_empty() {
            sqlx::query("DELETE FROM call_commands WHERE created_at < $1")
                .bind(now - KEPT_MS)
                .execute(&self.pool)
                .await?;
        }
        let mut taken = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("created_at")?,
                    TakenCommand {
                        id: uuid_of(row, "id")?,
                        call_id: uuid_of(row, "call_id")?,
                        command: row.try_get("command")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        taken.sort_by_key(|(at, c)| (*at, c.id));
        Ok(taken.into_iter().map(|(_, c)| c).collect())
    }

    /// Withdraws command `id` unless its node took it up already: `true` when it will never
    /// be carried out.
    pub async fn withdraw_command(&self, id: Uuid) -> Result<bool> {
        let withdrawn = sqlx::query("DELETE FROM call_commands WHERE id = $1 AND taken_at IS NULL")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(withdrawn.rows_affected() == 1)
    }

    /// Writes the answer to command `id`.
    pub async fn answer_command(&self, id: Uuid, answer: &str) -> Result<()> {
        sqlx::query("UPDATE call_commands SET answer = $1 WHERE id = $2")
            .bind(answer)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The answer to command `id`, once written (the row is then removed).
    pub async fn command_answer(&self, id: Uuid) -> Result<Option<String>> {
        let answer: Option<String> =
            sqlx::query("SELECT answer FROM call_commands WHERE id = $1 AND answer IS NOT NULL")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(|row| row.try_get("answer"))
                .transpose()?;
        if answer.is_some() {
            sqlx::query("DELETE FROM call_commands WHERE id = $1")
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: std::time::Duration = std::time::Duration::from_secs(3);

    crate::tests::on_both!(a_command_reaches_its_node_once_and_its_answer_comes_back);
    async fn a_command_reaches_its_node_once_and_its_answer_comes_back(s: Storage) {
        let call = Uuid::now_v7();
        let owner = s.clone().with_node("owner");
        let id = s
            .send_command(call, "owner", r#"{"hang_up":{}}"#)
            .await
            .unwrap();
        assert!(
            s.take_commands(FRESH).await.unwrap().is_empty(),
            "not this node's"
        );
        let taken = owner.take_commands(FRESH).await.unwrap();
        assert_eq!(
            taken,
            vec![TakenCommand {
                id,
                call_id: call,
                command: r#"{"hang_up":{}}"#.into(),
            }]
        );
        assert!(
            owner.take_commands(FRESH).await.unwrap().is_empty(),
            "taken once"
        );
        assert!(!s.withdraw_command(id).await.unwrap(), "taken: too late");
        assert_eq!(s.command_answer(id).await.unwrap(), None);
        owner.answer_command(id, r#"{"ok":true}"#).await.unwrap();
        assert_eq!(
            s.command_answer(id).await.unwrap().as_deref(),
            Some(r#"{"ok":true}"#)
        );
        assert_eq!(s.command_answer(id).await.unwrap(), None, "read once");
        // A command withdrawn before its node took it up is never carried out; one older than
        // the sender's patience is not taken either.
        let withdrawn = s.send_command(call, "owner", "{}").await.unwrap();
        assert!(s.withdraw_command(withdrawn).await.unwrap());
        s.send_command(call, "owner", "{}").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            owner
                .take_commands(std::time::Duration::from_millis(1))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
