//! The PostgreSQL backend: a bounded pool shared by any number of server
//! instances; startup waits for the database to come up. Every query is a
//! shared one of `queries.rs` but PUT and POST of a push token, which
//! gather into batches (`register_in_batches`), each one statement calling
//! the function of migration 0008; a write of several statements runs in a
//! transaction that is retried when it lost a race to a concurrent one (a
//! unique violation, a deadlock, a row gone under it), so the database's
//! constraints alone keep "one phone token, one row" and unique serials,
//! across any number of server instances.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};

use super::queries::Queries;
use super::transfer::{Imported, Transfer};
use super::{
    recipients_of, ByFamily, Channel, Credentials, Database, DeletedUser, EventRecord, Family,
    NewEvent, NewSession, NewUser, PoolOptions, PoolStats, PurgedEvents, PushTokenRow,
    PushTokenWrite, QueuedEvent, Recipient, Rotation, SessionUser, SocketClient, Stats, StoreError,
    StoreResult, UserKey, UserSummary, Written,
};

type Q = Queries<Postgres>;

/// How recently a pooled connection must have been in use to skip its
/// liveness check.
const RECENTLY_USED: Duration = Duration::from_secs(1);

/// Attempts of a write transaction before its error is returned.
const WRITE_ATTEMPTS: u32 = 20;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// PUTs and POSTs waiting for [`register_in_batches`].
    registrations: mpsc::UnboundedSender<Registration>,
}

impl PgStore {
    /// Connects, retrying with backoff for up to `options.startup_timeout`
    /// while the server is not reachable yet (compose start order).
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        // Notices (such as "relation already exists, skipping" each time
        // the migrations run) would be log lines at info level, even in the
        // one-line answer of a command.
        let connect = PgConnectOptions::from_str(url)?
            .application_name("pushtoken")
            .options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            // A connection that went back to the pool less than a second
            // ago passed sqlx's test on release: use it without another
            // round trip. One idle for longer (the server may have closed
            // it meanwhile) is pinged first, and replaced if it is gone.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < RECENTLY_USED {
                        return Ok(true);
                    }
                    Ok(conn.ping().await.is_ok())
                })
            })
            .connect_lazy_with(connect);
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            match sqlx::query("SELECT 1").execute(&pool).await {
                Ok(_) => {
                    let (registrations, queued) = mpsc::unbounded_channel();
                    let queued = Arc::new(tokio::sync::Mutex::new(queued));
                    for _ in 0..registering(options.max_connections) {
                        tokio::spawn(register_in_batches(pool.clone(), queued.clone()));
                    }
                    return Ok(Self {
                        pool,
                        registrations,
                    });
                }
                Err(e) if started.elapsed() < options.startup_timeout => {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "database not reachable yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "database not reachable after {}s: {e}",
                        options.startup_timeout.as_secs()
                    ))
                }
            }
        }
    }

    /// A pooled connection, for a read or a single statement.
    async fn conn(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// Runs `job` on `args` in a transaction of its own, again (after a
    /// short random pause) when it lost a race to a concurrent one.
    async fn write<A, T, F>(&self, args: &A, job: F) -> Result<T, sqlx::Error>
    where
        A: Sync + ?Sized,
        T: Send,
        F: for<'c> Fn(&'c mut PgConnection, &'c A) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + Sync,
    {
        let job = &job;
        retried(|| async move {
            let mut tx = self.pool.begin().await?;
            let out = job(&mut tx, args).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has been tried
/// [`WRITE_ATTEMPTS`] times: again after a short random pause
/// ([`backoff`]) when it lost a race to a concurrent write
/// ([`is_retryable`]).
async fn retried<T, Run, Attempt>(mut attempt: Run) -> Result<T, sqlx::Error>
where
    Run: FnMut() -> Attempt,
    Attempt: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(e) if tried < WRITE_ATTEMPTS && is_retryable(&e) => {
                backoff(tried).await;
                tried += 1;
            }
            done => return done,
        }
    }
}

/// Most PUTs and POSTs in one batch.
const MAX_BATCH: usize = 32;

/// How many batches may run at once, on a pool of `max_connections`: an
/// eighth of it, at least one (one on the default pool of 8). Fewer batches
/// at once make larger ones: the writes that arrive while a batch commits
/// wait for the next, which shares one statement and one commit among more
/// of them, as SQLite's one writer does. Measured alternating on 2 cores
/// with PostgreSQL beside the server (32 connections, 5 s, fresh database
/// each): with half the pool (4 batches at once), PUT 8,790–9,201/s and
/// POST 7,829–8,183/s; a quarter (2), PUT 9,482–10,788/s and POST
/// 8,584–9,249/s; an eighth (1), PUT 10,802–12,028/s and POST
/// 9,514–10,078/s, with less CPU per write in PostgreSQL (141–148 µs
/// against 203–213 µs for a PUT). The rest of the pool serves reads.
fn registering(max_connections: u32) -> u32 {
    (max_connections / 8).max(1)
}

/// A PUT (`serial`) or POST (`None`) waiting for its batch, and where its
/// outcome goes: the row written, or `None` for a POST with no serial left.
struct Registration {
    write: PushTokenWrite,
    serial: Option<i64>,
    done: oneshot::Sender<Result<Option<Written>, sqlx::Error>>,
}

/// One batch in one statement: the function of migration 0008, whose
/// arguments are one array per field (item `i` of each is write `i`).
const REGISTER_ROWS: &str = "SELECT * FROM pushtoken_register_rows\
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// Takes the registrations queued, up to [`MAX_BATCH`] at a time, and runs
/// each batch as one statement (its own transaction), until the store is
/// dropped. Batches form only under load: a write that finds a task idle
/// runs at once, alone.
async fn register_in_batches(
    pool: PgPool,
    queued: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Registration>>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut queued = queued.lock().await;
            let Some(first) = queued.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queued.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        // A request that has gone (its deadline passed) is not written.
        batch.retain(|r| !r.done.is_closed());
        if batch.is_empty() {
            continue;
        }
        match retried(|| register_rows(&pool, &batch)).await {
            Ok(outcomes) => {
                for (registration, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = registration.done.send(Ok(outcome));
                }
            }
            // Each alone, so that a write that cannot be made fails alone.
            Err(_) if batch.len() > 1 => {
                for registration in batch {
                    let alone = std::slice::from_ref(&registration);
                    let outcome = retried(|| register_rows(&pool, alone)).await;
                    let outcome = outcome.map(|mut outcomes| outcomes.pop().flatten());
                    let _ = registration.done.send(outcome);
                }
            }
            Err(e) => {
                if let Some(registration) = batch.pop() {
                    let _ = registration.done.send(Err(e));
                }
            }
        }
    }
}

/// Runs `batch` as one statement ([`REGISTER_ROWS`]): each write's outcome,
/// in order.
async fn register_rows(
    pool: &PgPool,
    batch: &[Registration],
) -> Result<Vec<Option<Written>>, sqlx::Error> {
    use sqlx::{FromRow, Row};
    let field = |get: fn(&Registration) -> Option<String>| -> Vec<Option<String>> {
        batch.iter().map(get).collect()
    };
    let number = |get: fn(&Registration) -> Option<i64>| -> Vec<Option<i64>> {
        batch.iter().map(get).collect()
    };
    let rows = sqlx::query(REGISTER_ROWS)
        .bind(number(|r| {
            Some(super::queries::lock_key(r.write.family, r.write.user_id))
        }))
        .bind(number(|r| Some(r.write.user_id)))
        .bind(field(|r| Some(r.write.family.as_str().to_owned())))
        .bind(number(|r| r.serial))
        .bind(field(|r| Some(r.write.input.push_token.clone())))
        .bind(field(|r| Some(r.write.input.language.clone())))
        .bind(number(|r| r.write.input.dev))
        .bind(field(|r| r.write.input.bundleid.clone()))
        .bind(field(|r| r.write.input.os.clone()))
        .bind(field(|r| r.write.input.os_token.clone()))
        .bind(field(|r| r.write.input.push_platform.clone()))
        .bind(field(|r| r.write.input.phone_model.clone()))
        .bind(field(|r| Some(r.write.default_bundleid.clone())))
        .bind(number(|r| Some(r.write.now)))
        .fetch_all(pool)
        .await?;
    let mut outcomes: Vec<Option<Written>> = batch.iter().map(|_| None).collect();
    for row in rows {
        let item: i32 = row.try_get("item")?;
        let slot = usize::try_from(item - 1)
            .ok()
            .and_then(|i| outcomes.get_mut(i))
            .ok_or(sqlx::Error::RowNotFound)?;
        *slot = match row.try_get::<String, _>("outcome")?.as_str() {
            "created" => Some(Written::Created(PushTokenRow::from_row(&row)?)),
            "updated" => Some(Written::Updated(PushTokenRow::from_row(&row)?)),
            _ => None,
        };
    }
    Ok(outcomes)
}

impl PgStore {
    /// Queues a PUT or POST for [`register_in_batches`], and waits for it.
    async fn register(
        &self,
        write: PushTokenWrite,
        serial: Option<i64>,
    ) -> Result<Option<Written>, sqlx::Error> {
        let (done, outcome) = oneshot::channel();
        let registration = Registration {
            write,
            serial,
            done,
        };
        self.registrations
            .send(registration)
            .map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// A short random pause before attempt `attempt` of a write, so writers that
/// collided do not collide again in lockstep.
async fn backoff(attempt: u32) {
    use rand::Rng;
    let most = 1u64 << attempt.min(6);
    let millis = rand::thread_rng().gen_range(0..=most);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Whether a failed write transaction should be run again.
fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::RowNotFound => true,
        sqlx::Error::Database(e) => {
            e.is_unique_violation() || matches!(e.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

#[async_trait]
impl Database for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn shared(&self) -> bool {
        true
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(Q::ping(&mut *self.conn().await?).await?)
    }

    async fn create_user(&self, user: NewUser, now: i64) -> StoreResult<i64> {
        Q::insert_user(&mut *self.conn().await?, &user, now)
            .await?
            .map_err(StoreError::Conflict)
    }

    async fn find_credentials(&self, login: &str) -> StoreResult<Option<Credentials>> {
        // No account name holds a NUL, and PostgreSQL text cannot even
        // compare one.
        if login.contains('\0') {
            return Ok(None);
        }
        Ok(Q::find_credentials(&mut *self.conn().await?, login).await?)
    }

    async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
        Ok(Q::list_users(&mut *self.conn().await?).await?)
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        Ok(Q::insert_session(&mut *self.conn().await?, &session).await?)
    }

    async fn session_user(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionUser>> {
        Ok(Q::session_user(&mut *self.conn().await?, token_hash, now).await?)
    }

    async fn logout(&self, session: &SessionUser) -> StoreResult<()> {
        let (session_id, user_id) = (session.session_id, session.user_id);
        Ok(self
            .write(&(), |conn, _| {
                Box::pin(Q::logout(conn, session_id, user_id))
            })
            .await?)
    }

    async fn rotate_session(
        &self,
        refresh_hash: &str,
        now: i64,
        next: NewSession,
        max_age: i64,
    ) -> StoreResult<Rotation> {
        Ok(self
            .write(&(refresh_hash, next), |conn, (hash, next)| {
                Box::pin(Q::rotate_session(conn, hash, now, next, max_age))
            })
            .await?)
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        Ok(self
            .write(&(), |conn, _| {
                Box::pin(Q::purge_expired_sessions(conn, now))
            })
            .await?)
    }

    async fn change_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep: Option<i64>,
    ) -> StoreResult<u64> {
        Ok(self
            .write(password_hash, |conn, hash| {
                Box::pin(Q::change_password(conn, user_id, hash, keep))
            })
            .await?)
    }

    async fn revoke_sessions(&self, user_id: i64) -> StoreResult<u64> {
        Ok(Q::revoke_sessions(&mut *self.conn().await?, user_id).await?)
    }

    async fn delete_user(&self, user_id: i64) -> StoreResult<Option<DeletedUser>> {
        Ok(self
            .write(&(), |conn, _| Box::pin(Q::delete_user(conn, user_id)))
            .await?)
    }

    async fn push_tokens(&self, family: Family, user_id: i64) -> StoreResult<Vec<PushTokenRow>> {
        Ok(Q::push_tokens(&mut *self.conn().await?, family, user_id).await?)
    }

    async fn session_push_tokens(
        &self,
        family: Family,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Vec<PushTokenRow>>> {
        Ok(Q::session_push_tokens(&mut *self.conn().await?, family, token_hash, now).await?)
    }

    async fn put_push_token(&self, write: PushTokenWrite, serial: i64) -> StoreResult<Written> {
        let written = self.register(write, Some(serial)).await?;
        Ok(written.ok_or(sqlx::Error::RowNotFound)?)
    }

    async fn post_push_token(&self, write: PushTokenWrite) -> StoreResult<Written> {
        self.register(write, None)
            .await?
            .ok_or(StoreError::Conflict("serial"))
    }

    async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool> {
        Ok(Q::delete_push_token(&mut *self.conn().await?, family, user_id, serial).await?)
    }

    async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64> {
        Ok(Q::delete_all_push_tokens(&mut *self.conn().await?, family, user_id).await?)
    }

    /// One statement on its own: it locks only the rows it deletes, for as
    /// long as it takes to delete them.
    async fn delete_stale_push_tokens(&self, before: i64, limit: i64) -> StoreResult<ByFamily> {
        Ok(Q::delete_stale_push_tokens(&mut *self.conn().await?, before, limit).await?)
    }

    async fn count_push_tokens(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(Q::count_push_tokens(&mut *self.conn().await?).await?)
    }

    async fn count_active_sessions(&self, now: i64) -> StoreResult<i64> {
        Ok(Q::count_active_sessions(&mut *self.conn().await?, now).await?)
    }

    async fn stats(&self, now: i64) -> StoreResult<Stats> {
        Ok(Q::stats(&mut *self.conn().await?, now).await?)
    }

    /// In a read-only repeatable-read transaction: one snapshot, while
    /// servers (if any run) write on beside it.
    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let records = Transfer::<Postgres>::export(&mut *tx, out).await;
        tx.rollback().await?;
        records
    }

    async fn import(
        &self,
        input: &mut (dyn tokio::io::AsyncBufRead + Send + Unpin),
    ) -> anyhow::Result<Imported> {
        let mut tx = self.pool.begin().await?;
        match Transfer::<Postgres>::import(&mut *tx, input).await {
            Ok(imported) => {
                tx.commit().await?;
                Ok(imported)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn server_secret(&self, name: &str, candidate: &str, now: i64) -> StoreResult<String> {
        Ok(Q::server_secret(&mut *self.conn().await?, name, candidate, now).await?)
    }

    async fn register_socket_client(&self, client: &SocketClient) -> StoreResult<()> {
        Ok(Q::register_socket_client(&mut *self.conn().await?, client).await?)
    }

    async fn user_exists(&self, id: i64) -> StoreResult<bool> {
        Ok(Q::user_exists(&mut *self.conn().await?, id).await?)
    }

    async fn password_hash(&self, id: i64) -> StoreResult<Option<String>> {
        Ok(Q::password_hash(&mut *self.conn().await?, id).await?)
    }

    async fn prune_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
        push_token: &str,
        os_token: &str,
    ) -> StoreResult<bool> {
        let conn = &mut *self.conn().await?;
        Ok(Q::prune_push_token(conn, family, user_id, serial, push_token, os_token).await?)
    }

    async fn recipients(
        &self,
        user: UserKey<'_>,
        family: Family,
    ) -> StoreResult<Option<(i64, Vec<Recipient>)>> {
        let rows = Q::recipients(&mut *self.conn().await?, user, family).await?;
        Ok(recipients_of(rows))
    }

    async fn record_event(&self, event: NewEvent) -> StoreResult<i64> {
        Ok(self
            .write(&event, |conn, event| Box::pin(Q::record_event(conn, event)))
            .await?)
    }

    async fn hold_socket(
        &self,
        token: &str,
        instance: &str,
        holder: &str,
        now: i64,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .write(
                &(token, instance, holder),
                |conn, (token, instance, holder)| {
                    Box::pin(Q::hold_socket(conn, token, instance, holder, now))
                },
            )
            .await?)
    }

    async fn release_socket(&self, token: &str, holder: &str) -> StoreResult<()> {
        Ok(Q::release_socket(&mut *self.conn().await?, token, holder).await?)
    }

    async fn queued_events(&self, token: &str, now: i64) -> StoreResult<Vec<QueuedEvent>> {
        Ok(Q::queued_events(&mut *self.conn().await?, token, now).await?)
    }

    async fn unqueue_events(&self, token: &str, sent: Vec<i64>) -> StoreResult<()> {
        Ok(Q::unqueue_events(&mut *self.conn().await?, token, &sent).await?)
    }

    async fn events(
        &self,
        user_id: i64,
        uid: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        Ok(Q::events(&mut *self.conn().await?, user_id, uid, offset, limit).await?)
    }

    async fn purge_events(&self, before: i64, now: i64) -> StoreResult<PurgedEvents> {
        Ok(self
            .write(&(), |conn, _| Box::pin(Q::purge_events(conn, before, now)))
            .await?)
    }

    async fn signal(&self, channel: Channel, message: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel.name())
            .bind(message)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn signals(
        &self,
        channel: Channel,
    ) -> StoreResult<Option<BoxStream<'static, Option<String>>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(channel.name()).await?;
        let messages = futures_util::stream::unfold(listener, |mut listener| async move {
            let message = match listener.try_recv().await {
                Ok(Some(notification)) => Some(notification.payload().to_owned()),
                // The connection was lost; the next call makes it again.
                Ok(None) => None,
                // The store is closing.
                Err(sqlx::Error::PoolClosed) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other instances");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            };
            Some((message, listener))
        });
        Ok(Some(Box::pin(messages)))
    }
}
