//! Group commit for SQLite: every write of the server runs on one connection
//! owned by one task on a thread of its own, which takes the writes that
//! queued while the last commit was being made and runs them all in one
//! transaction, so one WAL sync (`synchronous=FULL`) makes a whole batch
//! durable instead of one write each.
//!
//! Its interface is [`Writer`]: `start` it on a connection, then `write` a
//! function of the connection (for writes whose later statements depend on
//! earlier results) or `write_statements` of a fixed kind ([`Statements`];
//! `PUT`, `POST`, the deletes of push tokens and the events' writes are),
//! `committed` for the counts, `close` to finish. Fixed writes of one kind
//! run many to a command (`fixed.rs`, the only code that knows how); the
//! functions run one after another.
//!
//! A write that fails rolls its batch back, is answered with its error, and
//! the batch runs again without it, so each write lands whole or not at all
//! and one bad write does not fail the others. A caller hears back only
//! after the batch's `COMMIT` returned, so an acknowledged write is on disk.
//! A write still queued when its deadline (the acquire timeout) passes is
//! dropped unrun, and its caller gets a 503: a refused write never lands
//! later.

mod fixed;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Executor, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use fixed::{Fixed, Grouping, Runner, MAX_CHUNK};
pub use fixed::{Outcome, Statements};

/// Most writes one transaction takes.
const MAX_BATCH: usize = 256;
/// Writes that may wait for the writer; senders beyond wait for room.
const QUEUE: usize = 4096;
/// Rows and statement results the connection's thread may queue for the
/// writer without waiting for it: a whole command's worth.
pub const ROW_BUFFER: usize = 1024;

/// A caller's answer, once its write ran (or could not).
struct Reply<T> {
    outcome: Option<Result<T, sqlx::Error>>,
    answer: oneshot::Sender<Result<T, sqlx::Error>>,
}

impl<T> Reply<T> {
    /// Sends the last run's outcome, or `commit`, the error that kept its
    /// batch from committing.
    fn send(self, commit: Option<&sqlx::Error>) {
        let outcome = match (self.outcome, commit) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(e)) => Err(not_committed(e)),
            (Some(done), None) => done,
            (None, None) => Err(sqlx::Error::WorkerCrashed),
        };
        let _ = self.answer.send(outcome);
    }
}

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
    reply: Reply<T>,
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
            self.reply.outcome = Some(outcome);
            ok
        })
    }

    fn answer(self: Box<Self>, commit: Option<&sqlx::Error>) {
        self.reply.send(commit);
    }
}

/// A queued write of fixed statements, answered once its batch is
/// committed (or has failed).
trait QueuedFixed: Fixed {
    fn answer(self: Box<Self>, commit: Option<&sqlx::Error>);
}

struct FixedWrite<T, B> {
    kind: &'static Statements,
    bind: B,
    decode: fn(Vec<Outcome>) -> Result<T, sqlx::Error>,
    reply: Reply<T>,
}

impl<T, B> Fixed for FixedWrite<T, B>
where
    T: Send + 'static,
    B: Fn(&mut SqliteArguments<'static>) -> Result<(), BoxDynError> + Send + 'static,
{
    fn kind(&self) -> &'static Statements {
        self.kind
    }

    fn bind(&self, args: &mut SqliteArguments<'static>) -> Result<(), BoxDynError> {
        (self.bind)(args)
    }

    fn done(&mut self, outcome: Result<Vec<Outcome>, sqlx::Error>) -> bool {
        let outcome = outcome.and_then(self.decode);
        let ok = outcome.is_ok();
        self.reply.outcome = Some(outcome);
        ok
    }
}

impl<T, B> QueuedFixed for FixedWrite<T, B>
where
    T: Send + 'static,
    B: Fn(&mut SqliteArguments<'static>) -> Result<(), BoxDynError> + Send + 'static,
{
    fn answer(self: Box<Self>, commit: Option<&sqlx::Error>) {
        self.reply.send(commit);
    }
}

enum Job {
    Run(Box<dyn Queued>),
    Fixed(Box<dyn QueuedFixed>),
}

impl Job {
    fn answer(self, commit: Option<&sqlx::Error>) {
        match self {
            Job::Run(job) => job.answer(commit),
            Job::Fixed(job) => job.answer(commit),
        }
    }
}

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
        Self::start_grouped(conn, wait, Grouping::Commands)
    }

    fn start_grouped(
        conn: SqliteConnection,
        wait: Duration,
        grouping: Grouping,
    ) -> std::io::Result<Self> {
        let (queue, messages) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("pushtoken-writer".into())
            .spawn(move || runtime.block_on(run(conn, messages, writer_stats, grouping)))?;
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
        let reply = Reply {
            outcome: None,
            answer,
        };
        self.enqueue(Job::Run(Box::new(Pending { write, reply })), answered)
            .await
    }

    /// Runs a write of `kind`, with the arguments `bind` adds, in the next
    /// batch, and returns what `decode` makes of its statements' outcomes
    /// once the batch is committed. An error from `decode` fails the write
    /// as a failed statement would: it lands not at all.
    pub async fn write_statements<T, B>(
        &self,
        kind: &'static Statements,
        bind: B,
        decode: fn(Vec<Outcome>) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        B: Fn(&mut SqliteArguments<'static>) -> Result<(), BoxDynError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let reply = Reply {
            outcome: None,
            answer,
        };
        let job = FixedWrite {
            kind,
            bind,
            decode,
            reply,
        };
        self.enqueue(Job::Fixed(Box::new(job)), answered).await
    }

    async fn enqueue<T>(
        &self,
        job: Job,
        answered: oneshot::Receiver<Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let deadline = Instant::now() + self.wait;
        self.queue
            .send(Message::Write { job, deadline })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // No answer: dropped unrun (deadline passed, or the batch could not
        // begin).
        answered.await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Writes sent and not yet taken into a batch.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
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

async fn run(
    mut conn: SqliteConnection,
    mut messages: mpsc::Receiver<Message>,
    stats: Arc<Stats>,
    grouping: Grouping,
) {
    let mut received = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut fixed = Runner::new(grouping);
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
            commit_batch(&mut conn, &mut batch, &mut fixed, &stats).await;
        }
        if let Some(done) = close {
            messages.close();
            // Writes sent before the close was: still run them.
            while let Some(message) = messages.recv().await {
                if let Message::Write { job, .. } = message {
                    batch.push(job);
                    if batch.len() == MAX_BATCH {
                        commit_batch(&mut conn, &mut batch, &mut fixed, &stats).await;
                    }
                }
            }
            if !batch.is_empty() {
                commit_batch(&mut conn, &mut batch, &mut fixed, &stats).await;
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
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Job>,
    fixed: &mut Runner,
    stats: &Stats,
) {
    let mut failed = 0;
    loop {
        match run_batch(conn, batch, fixed).await {
            Ran::Committed => break,
            Ran::NotBegun(e) => {
                tracing::warn!(error = %e, writes = batch.len(), "could not begin a write batch");
                // Dropping the jobs answers their callers with 503.
                batch.clear();
                return;
            }
            Ran::NotCommitted(e) => {
                let _ = conn.execute("ROLLBACK").await;
                give_up(batch, &e, "a write batch did not commit");
                return;
            }
            Ran::Failed(i) => {
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
        }
    }
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .writes
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    for job in batch.drain(..) {
        job.answer(None);
    }
}

/// How one attempt at a batch ended.
enum Ran {
    Committed,
    /// `BEGIN` failed: nothing ran.
    NotBegun(sqlx::Error),
    /// The write at this index failed; the transaction is still open.
    Failed(usize),
    /// Every write ran but `COMMIT` failed.
    NotCommitted(sqlx::Error),
}

/// One step of a batch: a command running fixed writes of one kind, or a
/// write that is a function of the connection.
enum Step {
    /// Fixed writes of one kind, at these indices (ascending).
    Fixed(Vec<usize>),
    Run(usize),
}

/// The steps running every write of `batch`: the fixed writes kind by kind,
/// in commands of a power of two of up to [`MAX_CHUNK`] writes, then the
/// others one by one.
fn steps(batch: &[Job]) -> Vec<Step> {
    let mut kinds: Vec<(&'static Statements, Vec<usize>)> = Vec::new();
    let mut runs = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        match job {
            Job::Fixed(job) => {
                let kind = job.kind();
                match kinds.iter_mut().find(|(k, _)| k.name() == kind.name()) {
                    Some((_, writes)) => writes.push(i),
                    None => kinds.push((kind, vec![i])),
                }
            }
            Job::Run(_) => runs.push(Step::Run(i)),
        }
    }
    let mut steps = Vec::new();
    for (_, writes) in kinds {
        let mut rest = &writes[..];
        for n in chunks(writes.len()) {
            let (chunk, after) = rest.split_at(n);
            steps.push(Step::Fixed(chunk.to_vec()));
            rest = after;
        }
    }
    steps.extend(runs);
    steps
}

/// How `writes` writes of one kind are split into commands: the largest
/// power of two that fits, up to [`MAX_CHUNK`], again and again.
fn chunks(mut writes: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let n = 1 << writes.checked_ilog2()?.min(MAX_CHUNK.ilog2());
        writes -= n;
        Some(n)
    })
}

/// Runs every write of `batch` in one transaction. (`COMMIT` is never part
/// of a fixed writes' command: the connection's thread runs a command to its end without
/// waiting for the writer, which may yet find that a write failed, and must
/// then roll back.)
async fn run_batch(conn: &mut SqliteConnection, batch: &mut [Job], fixed: &mut Runner) -> Ran {
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        return Ran::NotBegun(e);
    }
    for step in steps(batch) {
        match step {
            Step::Fixed(at) => {
                let mut writes: Vec<&mut dyn Fixed> = batch
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| at.binary_search(i).is_ok())
                    .map(|(_, job)| match job {
                        Job::Fixed(write) => &mut **write as &mut dyn Fixed,
                        Job::Run(_) => unreachable!("a step runs writes of its own kind"),
                    })
                    .collect();
                if let Err(k) = fixed.run(conn, &mut writes).await {
                    return Ran::Failed(at[k]);
                }
            }
            Step::Run(i) => {
                let Job::Run(job) = &mut batch[i] else {
                    unreachable!("a step runs a write of its own kind");
                };
                if !job.run(conn).await {
                    return Ran::Failed(i);
                }
            }
        }
    }
    match conn.execute("COMMIT").await {
        Ok(_) => Ran::Committed,
        Err(e) => Ran::NotCommitted(e),
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

    use std::sync::LazyLock;

    use futures_util::future::join_all;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Arguments, ConnectOptions, Row};

    use super::*;

    async fn writer(dir: &tempfile::TempDir) -> (Writer, SqliteConnectOptions) {
        grouped_writer(dir, Grouping::Commands).await
    }

    async fn grouped_writer(
        dir: &tempfile::TempDir,
        grouping: Grouping,
    ) -> (Writer, SqliteConnectOptions) {
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
            Writer::start_grouped(conn, Duration::from_secs(5), grouping).unwrap(),
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

    /// The keys, in order, that writes `ks` leave in the table (`k` and
    /// `k + 1000` each).
    fn rows_of(ks: impl Iterator<Item = i64>) -> Vec<i64> {
        ks.flat_map(|k| [k, k + 1000])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Inserts rows `k` and `k + 1000` as fixed statements; the second
    /// fails (NOT NULL) when `k` is a multiple of 150, the decoding refuses
    /// the write when `k` is a multiple of 120, and a write whose `k` is a
    /// multiple of 210 binds one argument too few.
    static TWO_ROWS: LazyLock<Statements> = LazyLock::new(|| {
        Statements::new(
            "two-rows",
            "INSERT INTO t (k, v) VALUES ($1, 'a'); \
             INSERT INTO t (k, v) VALUES ($1 + 1000, $2) RETURNING k",
        )
    });

    async fn two_fixed_rows(writer: &Writer, k: i64) -> Result<i64, sqlx::Error> {
        let bind = move |args: &mut SqliteArguments<'static>| {
            args.add(k)?;
            if k % 210 == 0 {
                return Ok(());
            }
            args.add((k % 150 != 0).then_some("b"))
        };
        let decode = |outcomes: Vec<Outcome>| {
            let [first, second] = <[Outcome; 2]>::try_from(outcomes)
                .map_err(|_| sqlx::Error::Protocol("two outcomes".into()))?;
            assert_eq!((first.changes, first.rows.len()), (1, 0));
            let k = second.rows[0].try_get::<i64, _>(0)? - 1000;
            if k % 120 == 0 {
                return Err(sqlx::Error::Protocol("decoding refused".into()));
            }
            Ok(k)
        };
        writer.write_statements(&TWO_ROWS, bind, decode).await
    }

    #[test]
    fn writes_are_split_into_commands_of_a_power_of_two_up_to_the_largest() {
        assert_eq!(chunks(0).collect::<Vec<_>>(), Vec::<usize>::new());
        assert_eq!(chunks(1).collect::<Vec<_>>(), [1]);
        assert_eq!(chunks(13).collect::<Vec<_>>(), [8, 4, 1]);
        assert_eq!(chunks(MAX_CHUNK).collect::<Vec<_>>(), [MAX_CHUNK]);
        assert_eq!(
            chunks(2 * MAX_CHUNK + 3).collect::<Vec<_>>(),
            [MAX_CHUNK, MAX_CHUNK, 2, 1]
        );
        // Five sizes at most per kind: 1, 2, 4, ..., MAX_CHUNK.
        let sizes: std::collections::BTreeSet<usize> = (0..=MAX_BATCH).flat_map(chunks).collect();
        assert_eq!(sizes.len(), MAX_CHUNK.ilog2() as usize + 1);
    }

    #[tokio::test]
    async fn fixed_writes_share_commands_and_a_failed_one_lands_not_at_all() {
        fixed_and_function_writes_share_batches(Grouping::Commands).await;
    }

    #[tokio::test]
    async fn fixed_writes_one_statement_a_query_give_the_same_outcomes() {
        fixed_and_function_writes_share_batches(Grouping::OneByOne).await;
    }

    async fn fixed_and_function_writes_share_batches(grouping: Grouping) {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = grouped_writer(&dir, grouping).await;
        // Fixed and function writes in the same batches; seven fail (one
        // binding too few arguments), fewer than a batch gives up at.
        let fixed = join_all((1..=300).map(|k| two_fixed_rows(&writer, k)));
        let functions = join_all((301..=400).map(|k| two_rows(&writer, k)));
        let (fixed, functions) = tokio::join!(fixed, functions);
        let failing = |k: i64| match k {
            ..=300 => k % 150 == 0 || k % 120 == 0 || k % 210 == 0,
            _ => k % 50 == 0,
        };
        for (k, outcome) in (1..=400).zip(fixed.iter().chain(&functions)) {
            match outcome {
                Ok(got) => assert_eq!(*got, k),
                Err(e) => assert!(failing(k), "{k}: {e}"),
            }
            assert_eq!(outcome.is_err(), failing(k), "{k}");
        }
        let expected = rows_of((1..=400).filter(|&k| !failing(k)));
        assert_eq!(keys(&options).await, expected);
        let (batches, writes) = writer.committed();
        assert_eq!(writes, expected.len() as u64 / 2);
        assert!(
            batches < writes / 4,
            "{batches} commits for {writes} writes"
        );
        writer.close().await;
    }

    #[tokio::test]
    async fn a_fixed_write_alone_is_answered_after_its_commit_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        for k in 1..=5 {
            assert_eq!(two_fixed_rows(&writer, k).await.unwrap(), k);
            assert!(keys(&options).await.contains(&(k + 1000)));
        }
        for k in [120, 150, 210] {
            let refused = two_fixed_rows(&writer, k).await;
            assert!(refused.is_err(), "{refused:?}");
            assert!(!keys(&options).await.contains(&k));
        }
        writer.close().await;
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
        let expected = rows_of((1..=200).filter(|k| k % 50 != 0));
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
