//! The websocket's writer: a task that sends what the call queues, in order, so the call never
//! waits on the app. A stuck app (it stops reading, its TCP window at 0) cannot hold the task:
//! each send has [`WRITE_TIMEOUT`], after which the socket is dropped; and the task is aborted
//! whenever its [`Writer`] is dropped, on every exit of the brain (its end, or the engine's
//! abort after the brain's grace).
//!
//! A frame carrying caller audio the driver timed is timed again once written: the audio's way
//! from the engine's socket to the app's, [`super::INBOUND_METRIC`].

use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

/// How long one frame may wait on an app that reads nothing before its socket is dropped.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the end of the call lets the writer flush `stop` and the close frame: well inside
/// the engine's grace for a brain, which still has the record to write.
pub(super) const FLUSH_WAIT: Duration = Duration::from_millis(150);

/// A frame for the app, with when the caller audio it carries reached the engine (when timed).
pub(super) type Outgoing = (Message, Option<Instant>);

/// The writer task; aborted when dropped.
pub(super) struct Writer {
    task: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer on `sink` with a queue of `queue` frames; each send may take at most
    /// `write_timeout`.
    pub(super) fn spawn<S>(
        mut sink: S,
        queue: usize,
        write_timeout: Duration,
    ) -> (mpsc::Sender<Outgoing>, Writer)
    where
        S: Sink<Message> + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(queue);
        let task = tokio::spawn(
            async move {
                while let Some((message, arrived)) = rx.recv().await {
                    let close = matches!(message, Message::Close(_));
                    match tokio::time::timeout(write_timeout, sink.send(message)).await {
                        Ok(Ok(())) if !close => {
                            if let Some(arrived) = arrived {
                                metrics::histogram!(super::INBOUND_METRIC)
                                    .record(arrived.elapsed().as_secs_f64());
                            }
                        }
                        Ok(_) => break,
                        Err(_) => {
                            tracing::warn!(
                                "the Media Streams app read nothing for {} ms: its socket is dropped",
                                write_timeout.as_millis()
                            );
                            return;
                        }
                    }
                }
                let _ = tokio::time::timeout(write_timeout, sink.close()).await;
            }
            .in_current_span(),
        );
        (tx, Writer { task })
    }

    /// Lets the writer flush what is queued for at most `wait`, then ends it.
    pub(super) async fn finish(mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, &mut self.task).await;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A sink like a socket whose peer stopped reading: the first frame goes, then every send
    /// waits forever. `sent` counts what went.
    fn stuck_sink(
        sent: Arc<AtomicUsize>,
    ) -> std::pin::Pin<Box<dyn Sink<Message, Error = std::io::Error> + Send>> {
        Box::pin(futures_util::sink::unfold(
            sent,
            |sent, _message: Message| async move {
                if sent.fetch_add(1, Ordering::SeqCst) > 0 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::io::Error>(sent)
            },
        ))
    }

    #[tokio::test]
    async fn a_stuck_app_gets_its_socket_dropped_after_the_write_timeout() {
        let sent = Arc::new(AtomicUsize::new(0));
        let (tx, writer) = Writer::spawn(stuck_sink(sent.clone()), 4, Duration::from_millis(50));
        for n in 0..4 {
            tx.try_send((Message::text(n.to_string()), None)).unwrap();
        }
        // The writer gives up on the stuck send and drops the socket: its queue closes.
        tokio::time::timeout(Duration::from_secs(10), tx.closed())
            .await
            .expect("the writer ended on its write timeout");
        drop(writer);
        assert_eq!(sent.load(Ordering::SeqCst), 2, "one sent, one stuck");
    }

    #[tokio::test]
    async fn dropping_the_writer_aborts_it_even_mid_send() {
        let sent = Arc::new(AtomicUsize::new(0));
        let (tx, writer) = Writer::spawn(stuck_sink(sent), 4, Duration::from_secs(3600));
        tx.try_send((Message::text("a"), None)).unwrap();
        tx.try_send((Message::text("b"), None)).unwrap();
        drop(writer);
        tokio::time::timeout(Duration::from_secs(10), tx.closed())
            .await
            .expect("the aborted writer let go of its queue");
    }

    #[tokio::test]
    async fn finish_waits_for_the_close_then_ends() {
        let sent = Arc::new(AtomicUsize::new(0));
        let (tx, writer) = Writer::spawn(stuck_sink(sent.clone()), 4, Duration::from_secs(3600));
        tx.try_send((Message::Close(None), None)).unwrap();
        writer.finish(Duration::from_secs(10)).await;
        assert_eq!(sent.load(Ordering::SeqCst), 1, "the close frame went");
        assert!(tx.is_closed());
    }
}
