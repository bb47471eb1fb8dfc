//! Group commit for SQLite: every write of the server runs on one connection
//! owned by one task on a thread of its own, which takes the writes that
//! queued while the last commit was being made and runs them all in one
//! transaction, so one WAL sync (`synchronous=FULL`) makes a whole batch
//! durable instead of one write each.
//!
//! A write that fails rolls its batch back, is answered with its error, and
//! the batch runs again without it, so each write lands whole or not at all
//! and one bad write does not fail the others. A caller hears back only
//! after the batch's `COMMIT` returned, so an acknowledged write is on disk.
//! A write still queued when its deadline (the acquire timeout) passes is
//! dropped unrun, and its caller gets a 503: a refused write never lands
//! later.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use sqlx::{Executor, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most writes one transaction takes.
const MAX_BATCH: usize = 256;
/// Writes that may wait for the writer; senders beyond wait for room.
const QUEUE: usize = 4096;

/// A queued write: its statements, run once per attempt of its batch, and
/// its answer, given once the batch is committed (or has failed).
trait Queued: Send {
    /// Runs the write's statements; whether they all succeeded.
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;
    /// Answers the caller with the last run's outcome, or with `commit`,
    /// the error that kept its batch from committing.
    fn answer(self: Box<Self>, commit: Option<&sqlx::Error>);
}

struct Pending<T, F> {
    write: F,
    outcome: Option<Result<T, sqlx::Error>>,
    answer: oneshot::Sender<Result<T, sqlx::Error>>,
}

impl<T, F> Queued for Pending<T, F>
where
    T: Send + 'static,
    F: for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
        + Send
        + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = match AssertUnwindSafe((self.write)(conn)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(_) => Err(sqlx::Error::WorkerCrashed),
            };
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn answer(self: Box<Self>, commit: Option<&sqlx::Error>) {
        let outcome = match (self.outcome, commit) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(e)) => Err(not_committed(e)),
            (Some(done), None) => done,
            (None, None) => Err(sqlx::Error::WorkerCrashed),
        };
        let _ = self.answer.send(outcome);
    }
}

type Job = Box<dyn Queued>;

enum Message {
    Write {
        job: Job,
        deadline: Instant,
    },
    /// Finish what is queued, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// The handle requests write through; cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::Sender<Message>,
    wait: Duration,
    stats: Arc<Stats>,
}

/// Counts since start: transactions committed and the writes they held.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub writes: AtomicU64,
}

impl Writer {
    /// Starts the writer on `conn`, on a thread of its own. A write waits at
    /// most `wait` in the queue (and SQLite waits as long for a lock another
    /// process holds).
    ///
    /// The writer hands each statement to the connection's own thread and
    /// waits for the answer. As a task among the request tasks, every such
    /// answer would queue it behind them; on its own thread it goes on at
    /// once, so a batch takes as long as its statements do.
    pub fn start(conn: SqliteConnection, wait: Duration) -> std::io::Result<Self> {
        let (queue, messages) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("pushtoken-writer".into())
            .spawn(move || runtime.block_on(run(conn, messages, writer_stats)))?;
        Ok(Self { queue, wait, stats })
    }

    /// Committed batches and the writes they held, since start.
    pub fn committed(&self) -> (u64, u64) {
        (
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.writes.load(Ordering::Relaxed),
        )
    }

    /// Runs `write` in the next batch and returns its result once the batch
    /// is committed. `write` runs again if its batch is rolled back because
    /// another write in it failed.
    pub async fn write<T, F>(&self, write: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(Pending {
            write,
            outcome: None,
            answer,
        });
        let deadline = Instant::now() + self.wait;
        self.queue
            .send(Message::Write { job, deadline })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // No answer: dropped unrun (deadline passed, or the batch could not
        // begin).
        answered.await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Waits for the queued writes, then closes the connection.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// The error a write that ran gets when its batch did not commit.
fn not_committed(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!("commit failed: {e}")))
}

async fn run(mut conn: SqliteConnection, mut messages: mpsc::Receiver<Message>, stats: Arc<Stats>) {
    let mut received = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while messages.recv_many(&mut received, MAX_BATCH).await > 0 {
        let now = Instant::now();
        let mut close = None;
        let mut late = 0;
        for message in received.drain(..) {
            match message {
                // Too late: dropping the job answers its caller with 503.
                Message::Write { deadline, .. } if deadline <= now => late += 1,
                Message::Write { job, .. } => batch.push(job),
                Message::Close(done) => close = Some(done),
            }
        }
        if late > 0 {
            tracing::warn!(
                writes = late,
                "writes waited past the acquire timeout; refused"
            );
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, &mut batch, &stats).await;
        }
        if let Some(done) = close {
            messages.close();
            // Writes sent before the close was: still run them.
            while let Some(message) = messages.recv().await {
                if let Message::Write { job, .. } = message {
                    batch.push(job);
                    if batch.len() == MAX_BATCH {
                        commit_batch(&mut conn, &mut batch, &stats).await;
                    }
                }
            }
            if !batch.is_empty() {
                commit_batch(&mut conn, &mut batch, &stats).await;
            }
            if let Err(e) = sqlx::Connection::close(conn).await {
                tracing::warn!(error = %e, "closing the write connection");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Failed writes after which the rest of a batch is given up. A write fails
/// only on a database error (a refusal such as a taken username is an `Ok`
/// answer), and a database that fails this often is failing every write.
const MAX_FAILED: usize = 8;

/// Runs `batch` (emptying it) in one transaction and answers every caller
/// after the commit. A write that fails rolls the transaction back; it is
/// answered with its error and the others run again without it, so each
/// write lands whole or not at all.
async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Job>, stats: &Stats) {
    let mut failed = 0;
    loop {
        if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
            tracing::warn!(error = %e, writes = batch.len(), "could not begin a write batch");
            // Dropping the jobs answers their callers with 503.
            batch.clear();
            return;
        }
        let mut failure = None;
        for (i, job) in batch.iter_mut().enumerate() {
            if !job.run(conn).await {
                failure = Some(i);
                break;
            }
        }
        let Some(i) = failure else {
            break;
        };
        let rollback = conn.execute("ROLLBACK").await;
        batch.remove(i).answer(None);
        failed += 1;
        if let Err(e) = rollback {
            give_up(batch, &e, "a write batch could not roll back");
            return;
        }
        if failed == MAX_FAILED {
            let e = sqlx::Error::Protocol(format!("{failed} writes of one batch failed"));
            give_up(batch, &e, "a write batch was given up");
            return;
        }
        if batch.is_empty() {
            return;
        }
    }
    match conn.execute("COMMIT").await {
        Ok(_) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for job in batch.drain(..) {
                job.answer(None);
            }
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            give_up(batch, &e, "a write batch did not commit");
        }
    }
}

/// Answers every write of `batch` (emptying it) with `error`.
fn give_up(batch: &mut Vec<Job>, error: &sqlx::Error, what: &str) {
    tracing::error!(error = %error, writes = batch.len(), "{what}");
    for job in batch.drain(..) {
        job.answer(Some(error));
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use futures_util::future::join_all;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;

    use super::*;

    async fn writer(dir: &tempfile::TempDir) -> (Writer, SqliteConnectOptions) {
        let url = format!("sqlite://{}/w.db", dir.path().display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut conn = options.connect().await.unwrap();
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .await
            .unwrap();
        (
            Writer::start(conn, Duration::from_secs(5)).unwrap(),
            options,
        )
    }

    async fn keys(options: &SqliteConnectOptions) -> Vec<i64> {
        let mut conn = options.connect().await.unwrap();
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }

    /// Inserts rows `k` and `k + 1000`; fails between the two when `k` is
    /// a multiple of 50.
    async fn two_rows(writer: &Writer, k: i64) -> Result<i64, sqlx::Error> {
        writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO t (k, v) VALUES ($1, 'a')")
                        .bind(k)
                        .execute(&mut *conn)
                        .await?;
                    if k % 50 == 0 {
                        return Err(sqlx::Error::Protocol("refused".into()));
                    }
                    sqlx::query("INSERT INTO t (k, v) VALUES ($1, 'b')")
                        .bind(k + 1000)
                        .execute(&mut *conn)
                        .await?;
                    Ok(k)
                })
            })
            .await
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_a_failed_one_lands_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let outcomes = join_all((1..=200).map(|k| two_rows(&writer, k))).await;
        for (k, outcome) in (1..=200).zip(&outcomes) {
            match outcome {
                Ok(got) => assert_eq!(*got, k),
                Err(e) => assert!(k % 50 == 0 && e.to_string().contains("refused"), "{k}: {e}"),
            }
            assert_eq!(outcome.is_err(), k % 50 == 0, "{k}");
        }
        let expected: Vec<i64> = (1..=200)
            .filter(|k| k % 50 != 0)
            .flat_map(|k| [k, k + 1000])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(keys(&options).await, expected);
        let (batches, writes) = writer.committed();
        assert_eq!(writes, 196);
        assert!(batches < 196, "{batches} commits for {writes} writes");
        writer.close().await;
    }

    #[tokio::test]
    async fn a_write_is_answered_after_its_commit_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        for k in 1..=5 {
            two_rows(&writer, k).await.unwrap();
            // Another connection sees it at once: committed, not pending.
            assert!(keys(&options).await.contains(&k));
        }
        writer.close().await;
    }

    #[tokio::test]
    async fn a_write_queued_past_its_deadline_is_refused_unrun() {
        let dir = tempfile::tempdir().unwrap();
        let (_, options) = writer(&dir).await;
        let mut conn = options.clone().connect().await.unwrap();
        let writer = Writer::start(conn, Duration::ZERO).unwrap();
        let refused = two_rows(&writer, 7).await;
        assert!(
            matches!(refused, Err(sqlx::Error::PoolTimedOut)),
            "{refused:?}"
        );
        writer.close().await;
        conn = options.connect().await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn close_runs_the_writes_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let pending: Vec<_> = (1..=20)
            .map(|k| {
                let writer = writer.clone();
                tokio::spawn(async move { two_rows(&writer, k).await })
            })
            .collect();
        tokio::task::yield_now().await;
        writer.close().await;
        let answered = join_all(pending).await;
        let landed = keys(&options).await;
        for (k, outcome) in (1..=20).zip(answered) {
            match outcome.unwrap() {
                Ok(_) => assert!(landed.contains(&k), "{k} acknowledged but absent"),
                Err(_) => assert!(!landed.contains(&(k + 1000)), "{k} refused but stored"),
            }
        }
        let after = two_rows(&writer, 55).await;
        assert!(after.is_err(), "a closed writer takes no writes");
    }
}
