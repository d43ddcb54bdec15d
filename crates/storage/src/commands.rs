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

    /// Takes up this node's waiting commands, oldest first (each once), and sweeps old rows.
    pub async fn take_commands(&self) -> Result<Vec<TakenCommand>> {
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE call_commands SET taken_at = $1 WHERE node_id = $2 AND taken_at IS NULL \
             RETURNING id, call_id, command, created_at",
        )
        .bind(now)
        .bind(&*self.node)
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

    crate::tests::on_both!(a_command_reaches_its_node_once_and_its_answer_comes_back);
    async fn a_command_reaches_its_node_once_and_its_answer_comes_back(s: Storage) {
        let call = Uuid::now_v7();
        let owner = s.clone().with_node("owner");
        let id = s
            .send_command(call, "owner", r#"{"hang_up":{}}"#)
            .await
            .unwrap();
        assert!(
            s.take_commands().await.unwrap().is_empty(),
            "not this node's"
        );
        let taken = owner.take_commands().await.unwrap();
        assert_eq!(
            taken,
            vec![TakenCommand {
                id,
                call_id: call,
                command: r#"{"hang_up":{}}"#.into(),
            }]
        );
        assert!(
            owner.take_commands().await.unwrap().is_empty(),
            "taken once"
        );
        assert_eq!(s.command_answer(id).await.unwrap(), None);
        owner.answer_command(id, r#"{"ok":true}"#).await.unwrap();
        assert_eq!(
            s.command_answer(id).await.unwrap().as_deref(),
            Some(r#"{"ok":true}"#)
        );
        assert_eq!(s.command_answer(id).await.unwrap(), None, "read once");
    }
}
