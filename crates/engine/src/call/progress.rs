//! The call's progress log: its status steps written to the store in the order they happened,
//! each announced to watchers only once committed.

use dialtone_storage::{CallProgress, CallStatus, Storage};
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

/// One call's progress, written to the store in the order it happened by a task of its own,
/// so that the call's signalling and media never wait on a commit: a call answered while
/// its `dialing` row is still being written starts its media at once. Status only moves
/// forward, so the writes keep their order; [`ProgressLog::close`] waits for the last one.
pub(super) struct ProgressLog {
    writes: mpsc::UnboundedSender<(CallStatus, CallProgress)>,
    writer: tokio::task::JoinHandle<()>,
}

impl ProgressLog {
    /// Starts the writer of call `id`'s steps, announcing each committed one on `changes`.
    pub(super) fn start(
        storage: Storage,
        changes: tokio::sync::broadcast::Sender<Uuid>,
        id: Uuid,
    ) -> Self {
        let (writes, mut pending) = mpsc::unbounded_channel::<(CallStatus, CallProgress)>();
        let writer = tokio::spawn(
            async move {
                while let Some((status, progress)) = pending.recv().await {
                    match storage.advance_call(id, status, progress).await {
                        // Committed: now it may be announced.
                        Ok(_) => {
                            let _ = changes.send(id);
                        }
                        Err(error) => tracing::error!(
                            %error,
                            status = status.as_str(),
                            "could not record call progress"
                        ),
                    }
                }
            }
            .in_current_span(),
        );
        Self { writes, writer }
    }

    /// Queues `status` (with what came with it) behind the writes before it.
    pub(super) fn record(&self, status: CallStatus, mut progress: CallProgress) {
        // Stamped now: the step's time is when it happened, not when its write gets its turn.
        progress.at = Some(dialtone_storage::now_ms());
        // The writer only stops once `close` drops the sender.
        let _ = self.writes.send((status, progress));
    }

    /// Waits until everything recorded is written.
    pub(super) async fn close(self) {
        drop(self.writes);
        if let Err(error) = self.writer.await {
            tracing::error!(%error, "the call's progress writer failed");
        }
    }
}
