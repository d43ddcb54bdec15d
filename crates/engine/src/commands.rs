//! Commands for a call another node owns. A hang-up or a transfer asked of a node where the
//! call is not live goes, when the call's record names another node as its owner and the call
//! is not over, through the database ([`dialtone_storage::Storage::send_command`]): the owner
//! takes its commands up every [`COMMAND_POLL`], carries each out on the live call as if asked
//! directly, and writes the answer, which the asking node waits for (at most
//! [`COMMAND_WAIT`]) and answers the API with. A command not taken up in that time is
//! withdrawn, and never taken after it: a 503 means it was not carried out.

use std::sync::Arc;
use std::time::Duration;

use dialtone_model::{FieldError, TransferCall};
use dialtone_storage::StorageError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Engine, EngineError};

/// How often a node takes up the commands written for it.
pub(crate) const COMMAND_POLL: Duration = Duration::from_millis(20);
/// How long the asking node waits for the owner's answer.
const COMMAND_WAIT: Duration = Duration::from_secs(3);

/// What one node asks of another's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NodeCommand {
    /// Hang up (as `POST /v1/calls/{id}/hangup`).
    HangUp,
    /// Transfer (as `POST /v1/calls/{id}/transfer`).
    Transfer(TransferCall),
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CommandAnswer {
    /// Done (the hang-up went out, the transfer started).
    Done,
    /// The call is not live there any more.
    NotLive,
    /// A transfer of a call not in progress.
    NotInProgress,
    /// A transfer while another is under way.
    UnderWay,
    /// A transfer whose destination or mode breaks a rule.
    Invalid {
        /// The field.
        field: String,
        /// The rule.
        message: String,
    },
}

impl CommandAnswer {
    fn of(result: Result<(), EngineError>) -> Self {
        match result {
            Ok(()) => Self::Done,
            Err(EngineError::CallNotInProgress { .. }) => Self::NotInProgress,
            Err(EngineError::TransferUnderWay { .. }) => Self::UnderWay,
            Err(EngineError::InvalidTransfer(error)) => Self::Invalid {
                field: error.field,
                message: error.message,
            },
            Err(_) => Self::NotLive,
        }
    }

    fn into_result(self, call_id: Uuid) -> Result<(), EngineError> {
        match self {
            Self::Done => Ok(()),
            Self::NotLive => Err(EngineError::CallEnded { call_id }),
            Self::NotInProgress => Err(EngineError::CallNotInProgress { call_id }),
            Self::UnderWay => Err(EngineError::TransferUnderWay { call_id }),
            Self::Invalid { field, message } => Err(EngineError::InvalidTransfer(
                FieldError::invalid(&field, message),
            )),
        }
    }
}

impl Engine {
    /// Carries `command` out on the node that owns call `call_id`, which is not live here:
    /// `CallNotFound`, `CallEnded` (over, or this node's and gone), or the owner's answer.
    pub(crate) async fn on_owner(
        &self,
        call_id: Uuid,
        command: NodeCommand,
    ) -> Result<(), EngineError> {
        let call = match self.storage.get_call(call_id).await {
            Ok(call) => call,
            Err(StorageError::NotFound { .. }) => {
                return Err(EngineError::CallNotFound { call_id });
            }
            Err(e) => return Err(e.into()),
        };
        let owner = match call.node {
            Some(node) if !call.status.is_final() && node != self.storage.node() => node,
            _ => return Err(EngineError::CallEnded { call_id }),
        };
        let text = serde_json::to_string(&command).unwrap_or_default();
        let id = self.storage.send_command(call_id, &owner, &text).await?;
        let deadline = tokio::time::Instant::now() + COMMAND_WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(answer) = self.storage.command_answer(id).await? {
                return serde_json::from_str::<CommandAnswer>(&answer)
                    .unwrap_or(CommandAnswer::NotLive)
                    .into_result(call_id);
            }
            tokio::time::sleep(COMMAND_POLL / 2).await;
        }
        // Withdrawn unless taken up meanwhile; then its answer may still come.
        if !self.storage.withdraw_command(id).await? {
            tokio::time::sleep(COMMAND_POLL).await;
            if let Some(answer) = self.storage.command_answer(id).await? {
                return serde_json::from_str::<CommandAnswer>(&answer)
                    .unwrap_or(CommandAnswer::NotLive)
                    .into_result(call_id);
            }
        }
        Err(EngineError::OwnerUnreachable { node: owner })
    }

    /// Takes up the commands other nodes wrote for this node's calls, every [`COMMAND_POLL`],
    /// until the task is aborted.
    pub async fn serve_commands(self: Arc<Self>) {
        let mut every = tokio::time::interval(COMMAND_POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let taken = match self.storage.take_commands(COMMAND_WAIT).await {
                Ok(taken) => taken,
                Err(error) => {
                    tracing::warn!(%error, "cannot take up the commands for this node");
                    continue;
                }
            };
            for command in taken {
                let result = match serde_json::from_str::<NodeCommand>(&command.command) {
                    Ok(NodeCommand::HangUp) => match self.hangup_here(command.call_id) {
                        true => Ok(()),
                        false => Err(EngineError::CallEnded {
                            call_id: command.call_id,
                        }),
                    },
                    Ok(NodeCommand::Transfer(request)) => self
                        .transfer_here(command.call_id, request)
                        .await
                        .unwrap_or(Err(EngineError::CallEnded {
                            call_id: command.call_id,
                        })),
                    Err(error) => {
                        tracing::warn!(%error, "a command this node cannot read");
                        Err(EngineError::CallEnded {
                            call_id: command.call_id,
                        })
                    }
                };
                tracing::info!(call = %command.call_id, ok = result.is_ok(), "carried out another node's command");
                let answer = serde_json::to_string(&CommandAnswer::of(result)).unwrap_or_default();
                if let Err(error) = self.storage.answer_command(command.id, &answer).await {
                    tracing::warn!(%error, "cannot answer another node's command");
                }
            }
        }
    }
}
