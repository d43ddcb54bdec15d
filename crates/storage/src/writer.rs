//! The call path's writes, committed in groups by one writer.
//!
//! Every call writes its row at dispatch and then a handful of steps (dialing, ringing,
//! answered, ended, its transcript and result). Done as one transaction each on a shared pool,
//! SQLite's single write lock is held across every statement's round trip through the async
//! runtime — milliseconds each when the runtime is busy with hundreds of speech loops — and the
//! writers queue for it in the busy handler's growing sleeps. Here one thread with a runtime of
//! its own owns one connection and commits whatever has queued up since its last commit in one
//! transaction, one commit (one `fsync` on SQLite) for many writes.
//!
//! Inside the transaction the writes are set-based: all the new calls of a group are one
//! multi-row `INSERT`, all its status steps one `UPDATE … FROM` a list of steps, all the events
//! they announce one `INSERT`. Each statement is a round trip to the database's own thread, and
//! on a machine whose cores are busy every round trip waits for a core, so a group costs a few
//! round trips, not one or two per write. Writes of one call keep their order (a group holding
//! two steps of one call applies them in two rounds); writes of different calls commute.
//!
//! Only a group holding a new call (an accepted dispatch) waits for the disk at its commit; the
//! steps and details of calls already written are committed without waiting for it (SQLite's
//! `synchronous = NORMAL` under write-ahead logging, PostgreSQL's `synchronous_commit = off`):
//! they survive a crash of this process all the same, and a power loss that takes the last of
//! them back leaves calls the next start closes as it does after any crash.
//!
//! A write that fails does not take the others down: the group is rolled back and each write is
//! retried in a transaction of its own, so each caller gets its own answer. Only once its
//! transaction has committed is a caller told its write happened.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::call_writes::{AdvanceCall, InsertCall, SetDetail};
use crate::{Backend, Result, StorageError, prepare_connection};

/// Most writes one transaction takes.
const MAX_GROUP: usize = 256;

/// A future borrowing the writer's connection.
pub(crate) type Pending<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// One kind of write the writer commits.
pub(crate) trait Write: Sized + Send + Sync + 'static {
    /// What the caller is told once it has committed.
    type Output: Send + 'static;

    /// The call the write is about.
    fn call_id(&self) -> Uuid;

    /// Does `writes` — each about a different call — inside the writer's open transaction, in
    /// as few statements as it can; one outcome per write, in their order.
    fn apply_all<'c>(
        conn: &'c mut AnyConnection,
        writes: &'c [&'c Self],
    ) -> Pending<'c, Vec<Self::Output>>;

    /// What the write amounts to after `error` rolled its own transaction back (`conn` is no
    /// longer in one); by default, that error.
    fn recover<'c>(
        &'c self,
        _conn: &'c mut AnyConnection,
        error: StorageError,
    ) -> Pending<'c, Self::Output> {
        Box::pin(async move { Err(error) })
    }
}

/// How a kind of write sits in the queue ([`kinds!`] makes it).
pub(crate) trait Kind: Write {
    /// Queues it.
    fn job(queued: Queued<Self>) -> Job;

    /// The queued write of this kind `job` holds, if it holds one.
    fn queued(job: &Job) -> Option<&Queued<Self>>;

    /// The same, to record what it did.
    fn queued_mut(job: &mut Job) -> Option<&mut Queued<Self>>;
}

/// A write waiting for its commit, with the caller waiting for its outcome.
pub(crate) struct Queued<W: Write> {
    write: W,
    /// Set by the group (or alone) once applied: what the caller is told if it commits.
    applied: Option<W::Output>,
    reply: oneshot::Sender<Result<W::Output>>,
}

impl<W: Write> Queued<W> {
    /// `write`, queued, and where its caller hears the outcome.
    fn new(write: W) -> (Self, oneshot::Receiver<Result<W::Output>>) {
        let (reply, outcome) = oneshot::channel();
        let queued = Self {
            write,
            applied: None,
            reply,
        };
        (queued, outcome)
    }

    /// Tells the caller: what the write did once `outcome` (its commit) is `Ok`.
    fn finish(self, outcome: Result<()>) {
        // Every write of a group that applied has its outcome recorded.
        let told = outcome.and_then(|()| self.applied.ok_or(StorageError::Closed));
        // A caller that stopped waiting does not need to be told.
        let _ = self.reply.send(told);
    }

    /// Applies and commits the write in a transaction of its own.
    async fn commit_alone(&mut self, conn: &mut AnyConnection) -> Result<()> {
        let mut tx = conn.begin().await?;
        match W::apply_all(&mut tx, &[&self.write]).await {
            Ok(outcomes) => {
                self.applied = outcomes.into_iter().next();
                Ok(tx.commit().await?)
            }
            Err(error) => {
                tx.rollback().await?;
                self.applied = Some(self.write.recover(conn, error).await?);
                Ok(())
            }
        }
    }
}

/// The kinds of write: the queue's [`Job`], each kind's [`Kind`], and one round of a group
/// applied kind by kind.
macro_rules! kinds {
    ($($variant:ident: $write:ty),* $(,)?) => {
        /// A queued write of any kind (boxed: a new call's outcome is a whole call record).
        pub(crate) enum Job {
            $($variant(Box<Queued<$write>>),)*
        }

        impl Job {
            fn call_id(&self) -> Uuid {
                match self {
                    $(Self::$variant(q) => q.write.call_id(),)*
                }
            }

            fn finish(self, outcome: Result<()>) {
                match self {
                    $(Self::$variant(q) => q.finish(outcome),)*
                }
            }

            async fn commit_alone(&mut self, conn: &mut AnyConnection) -> Result<()> {
                match self {
                    $(Self::$variant(q) => q.commit_alone(conn).await,)*
                }
            }
        }

        $(impl Kind for $write {
            fn job(queued: Queued<Self>) -> Job {
                Job::$variant(Box::new(queued))
            }

            fn queued(job: &Job) -> Option<&Queued<Self>> {
                match job {
                    Job::$variant(q) => Some(q),
                    _ => None,
                }
            }

            fn queued_mut(job: &mut Job) -> Option<&mut Queued<Self>> {
                match job {
                    Job::$variant(q) => Some(q),
                    _ => None,
                }
            }
        })*

        /// Applies the writes of `round`, kind by kind (they are of different calls: the
        /// order between kinds does not matter).
        async fn apply_round(
            conn: &mut AnyConnection,
            group: &mut [Job],
            rounds: &[usize],
            round: usize,
        ) -> Result<()> {
            $(apply_kind::<$write>(conn, group, rounds, round).await?;)*
            Ok(())
        }
    };
}

kinds!(Insert: InsertCall, Advance: AdvanceCall, Detail: SetDetail);

impl Job {
    /// Whether its commit must reach the disk before its caller hears of it: a new call is an
    /// accepted dispatch. A call's later steps and details survive a crash of this process
    /// whatever the database's sync setting (they are in the database's log, or the database
    /// server's); only a power loss or a crash of the operating system (of the database
    /// server, on PostgreSQL) can take the last of them back, and the next start deals with
    /// calls left unfinished as it does after any crash.
    fn must_be_on_disk(&self) -> bool {
        matches!(self, Self::Insert(_))
    }
}

/// Makes the connection's next commits wait for the disk (`on_disk`) or not: SQLite's
/// `synchronous` (`FULL`, or `NORMAL`, under which write-ahead logging syncs only at
/// checkpoints), PostgreSQL's `synchronous_commit`.
async fn sync_commits(conn: &mut AnyConnection, on_disk: bool) -> sqlx::Result<()> {
    let statement = match (Backend::of(conn), on_disk) {
        (Backend::Sqlite, true) => "PRAGMA synchronous = FULL",
        (Backend::Sqlite, false) => "PRAGMA synchronous = NORMAL",
        (Backend::Postgres, true) => "SET synchronous_commit = on",
        (Backend::Postgres, false) => "SET synchronous_commit = off",
    };
    sqlx::query(statement).execute(conn).await?;
    Ok(())
}

enum Message {
    Write(Job),
    /// Commit what came before, close the connection, stop.
    Close(oneshot::Sender<()>),
}

/// Where the writer's connection comes from.
enum Source {
    /// A connection of its own, opened on the writer's thread.
    Own(AnyConnection),
    /// The pool's (an in-memory SQLite database lives in one connection, the pool's only one).
    Pool(AnyPool),
}

/// The handle callers queue writes on; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Message>,
}

impl Writer {
    /// Starts the writer's thread. It opens a connection of its own to `url` (a `backend`
    /// database), or with `shared` uses that pool's.
    pub(crate) async fn start(
        url: String,
        backend: Backend,
        shared: Option<AnyPool>,
    ) -> Result<Self> {
        let (queue, messages) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StorageError::WriterThread { source })?;
        std::thread::Builder::new()
            .name("dialtone-storage-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let source = match shared {
                        Some(pool) => Ok(Source::Pool(pool)),
                        None => open(&url, backend).await.map(Source::Own),
                    };
                    match source {
                        Ok(source) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(source, messages).await;
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|source| StorageError::WriterThread { source })?;
        ready.await.map_err(|_| StorageError::Closed)??;
        Ok(Self { queue })
    }

    /// Queues `write` and waits until it is committed (or why it is not).
    pub(crate) async fn write<W: Kind>(&self, write: W) -> Result<W::Output> {
        let (queued, outcome) = Queued::new(write);
        self.queue
            .send(Message::Write(W::job(queued)))
            .map_err(|_| StorageError::Closed)?;
        outcome.await.map_err(|_| StorageError::Closed)?
    }

    /// Commits what is queued, closes the writer's connection and stops it; later writes fail
    /// with [`StorageError::Closed`].
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

async fn open(url: &str, backend: Backend) -> Result<AnyConnection> {
    let mut conn = AnyConnection::connect(url).await?;
    prepare_connection(&mut conn, backend).await?;
    Ok(conn)
}

/// The writer's loop: takes every write queued since the last commit and commits them together.
async fn serve(mut source: Source, mut messages: mpsc::UnboundedReceiver<Message>) {
    let mut received = Vec::with_capacity(MAX_GROUP);
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut closed_by = None;
    // What the connection's commits do now (unknown at first: the database's default).
    let mut synced: Option<bool> = None;
    while closed_by.is_none() && messages.recv_many(&mut received, MAX_GROUP).await > 0 {
        let mut close = None;
        for message in received.drain(..) {
            match message {
                Message::Write(job) if close.is_none() => group.push(job),
                // Writes queued behind a close are dropped: their callers hear `Closed`.
                Message::Write(_) => {}
                Message::Close(done) => close = close.or(Some(done)),
            }
        }
        if !group.is_empty() {
            match &mut source {
                Source::Own(conn) => {
                    let on_disk = group.iter().any(Job::must_be_on_disk);
                    if synced != Some(on_disk) {
                        synced = None;
                        match sync_commits(conn, on_disk).await {
                            Ok(()) => synced = Some(on_disk),
                            // Not committed as it must be: not committed at all.
                            Err(error) => fail_all(&mut group, error),
                        }
                    }
                    commit_group(conn, &mut group).await;
                }
                Source::Pool(pool) => match pool.acquire().await {
                    Ok(mut conn) => commit_group(&mut conn, &mut group).await,
                    Err(error) => fail_all(&mut group, error),
                },
            }
        }
        if close.is_some() {
            messages.close();
            closed_by = close;
        }
    }
    if let Source::Own(conn) = source {
        let _ = conn.close().await;
    }
    if let Some(done) = closed_by {
        let _ = done.send(());
    }
}

/// Tells every caller of `group` that no connection could be had: the first gets `error`, the
/// others `Closed` (an error cannot be copied).
fn fail_all(group: &mut Vec<Job>, error: sqlx::Error) {
    let mut error = Some(StorageError::from(error));
    for job in group.drain(..) {
        job.finish(Err(error.take().unwrap_or(StorageError::Closed)));
    }
}

/// Commits `group` in one transaction; if any write in it fails, rolls it back and commits
/// each write alone. Every caller is told.
async fn commit_group(conn: &mut AnyConnection, group: &mut Vec<Job>) {
    // On a failure, each alone below: the failing one gets its own error, the rest commit.
    if group.len() > 1 && apply_group(conn, group).await.is_ok() {
        for job in group.drain(..) {
            job.finish(Ok(()));
        }
        return;
    }
    for mut job in group.drain(..) {
        let outcome = job.commit_alone(conn).await;
        job.finish(outcome);
    }
}

async fn apply_group(conn: &mut AnyConnection, group: &mut [Job]) -> Result<()> {
    let mut tx = conn.begin().await?;
    match apply_rounds(&mut tx, group).await {
        Ok(()) => Ok(tx.commit().await?),
        Err(error) => {
            tx.rollback().await?;
            Err(error)
        }
    }
}

/// Applies a group in rounds: a write's round is how many writes of its call came before it in
/// the group, so each round holds a call at most once and a call's writes keep their order.
async fn apply_rounds(conn: &mut AnyConnection, group: &mut [Job]) -> Result<()> {
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    let rounds: Vec<usize> = group
        .iter()
        .map(|job| {
            let earlier = seen.entry(job.call_id()).or_default();
            *earlier += 1;
            *earlier - 1
        })
        .collect();
    for round in 0..seen.values().copied().max().unwrap_or(0) {
        apply_round(conn, group, &rounds, round).await?;
    }
    Ok(())
}

/// Applies the writes of kind `W` in `round` together and records what each did.
async fn apply_kind<W: Kind>(
    conn: &mut AnyConnection,
    group: &mut [Job],
    rounds: &[usize],
    round: usize,
) -> Result<()> {
    let picked: Vec<usize> = rounds
        .iter()
        .enumerate()
        .filter(|&(i, r)| *r == round && group.get(i).and_then(W::queued).is_some())
        .map(|(i, _)| i)
        .collect();
    if picked.is_empty() {
        return Ok(());
    }
    let outcomes = {
        let writes: Vec<&W> = picked
            .iter()
            .filter_map(|&i| group.get(i).and_then(W::queued))
            .map(|q| &q.write)
            .collect();
        W::apply_all(conn, &writes).await?
    };
    for (i, outcome) in picked.into_iter().zip(outcomes) {
        if let Some(queued) = group.get_mut(i).and_then(W::queued_mut) {
            queued.applied = Some(outcome);
        }
    }
    Ok(())
}

/// Commits `writes` as one group on `conn`, the way the writer does with what queued up
/// together, and returns what each caller is told.
#[cfg(test)]
pub(crate) async fn commit_together<W: Kind>(
    conn: &mut AnyConnection,
    writes: Vec<W>,
) -> Vec<Result<W::Output>> {
    let mut told = Vec::new();
    let mut group = Vec::new();
    for write in writes {
        let (queued, outcome) = Queued::new(write);
        group.push(W::job(queued));
        told.push(outcome);
    }
    commit_group(conn, &mut group).await;
    let mut outcomes = Vec::new();
    for outcome in told {
        outcomes.push(outcome.await.unwrap_or(Err(StorageError::Closed)));
    }
    outcomes
}
