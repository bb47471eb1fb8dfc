//! The SQLite backend: one file in WAL mode; reads on a small pool of
//! connections (`readers.rs`), writes through one writer, on a thread of
//! its own, that commits them in batches (`writer/`). `PUT` and the
//! deletes are fixed statements, which the writer runs many to a command;
//! the other queries are the shared ones of `queries.rs`.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Arguments, ConnectOptions, Connection, FromRow, Sqlite, SqliteConnection};

use super::queries::{update_row_sql, Dialect, Queries, DELETE_FAMILY, DELETE_ONE, ROW_COLUMNS};
use super::readers::{Reader, Readers};
use super::transfer::{Imported, Transfer};
use super::writer::{Outcome, Statements, Writer, ROW_BUFFER};
use super::{
    Backend, ByFamily, Channel, Credentials, Database, DeletedUser, EventRecord, Family, NewEvent,
    NewSession, NewUser, PoolOptions, PoolStats, PurgedEvents, PushTokenRow, PushTokenWrite,
    QueuedEvent, Recipient, Rotation, SessionUser, SocketClient, Stats, StoreError, StoreResult,
    UserSummary, Written,
};

type Q = Queries<Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: Writer,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.sqlite_full_sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true)
            .busy_timeout(options.acquire_timeout);
        if !in_memory(&connect) {
            private_files(connect.get_filename())?;
        }
        // The writer's connection opens (and creates) the file now, so a
        // bad path stops startup; read connections open as reads need them.
        let writer = Writer::start(
            connect
                .clone()
                .row_buffer_size(ROW_BUFFER)
                .connect()
                .await?,
            options.acquire_timeout,
        )?;
        let readers = Readers::new(connect, options.max_connections, options.acquire_timeout);
        Ok(Self { readers, writer })
    }

    /// Runs `job` on `args` in the writer's next batch (again if the batch
    /// is rolled back for another write): the SQLite side of PostgreSQL's
    /// `PgStore::write`.
    async fn write<A, T, F>(&self, args: A, job: F) -> Result<T, sqlx::Error>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection, &'c A) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Clone
            + Send
            + 'static,
    {
        let args = Arc::new(args);
        self.writer
            .write(move |conn| {
                let (args, job) = (args.clone(), job.clone());
                Box::pin(async move { job(conn, &args).await })
            })
            .await
    }

    /// A connection for a read.
    async fn reader(&self) -> Result<Reader, sqlx::Error> {
        self.readers.acquire().await
    }
}

/// The file a `sqlite:` URL names, if it does not exist: `None` when it
/// does, for a database in memory, and for another kind of URL.
pub fn missing_sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if Backend::of_url(url) != Some(Backend::Sqlite) {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    if in_memory(&options) || path.as_os_str() == ":memory:" || path.exists() {
        return None;
    }
    Some(path.to_path_buf())
}

/// Whether `options` name a database in memory, which has no file.
fn in_memory(options: &SqliteConnectOptions) -> bool {
    let url = options.to_url_lossy();
    url.query_pairs()
        .any(|(key, value)| key == "mode" && value == "memory")
}

/// Makes the database at `path` readable by this process's user only
/// before SQLite opens it: the folders it creates are 0700, and the file, if
/// missing, is created empty (an empty file is an empty database) as 0600.
/// SQLite gives the `-wal` and `-shm` files it makes later the mode of the
/// database file. A file of the three left with group or other bits (by
/// an older version, or a copy) is narrowed to 0600, with a warning.
#[cfg(unix)]
fn private_files(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create database folder {}: {e}", dir.display()))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create the database file {}: {e}", path.display()),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                "the database file was readable by others ({mode:o}): made it {:o}",
                mode & 0o700
            ),
            Err(e) => tracing::warn!(
                file = %file.display(),
                error = %e,
                "the database file is readable by others ({mode:o}) and could not be narrowed"
            ),
        }
    }
    Ok(())
}

/// Elsewhere, the folders only: file modes are Unix's.
#[cfg(not(unix))]
fn private_files(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create database folder {}: {e}", dir.display()))?;
    }
    Ok(())
}

#[async_trait]
impl Database for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.reader().await?;
        // `run_direct`: `run` on a `&mut` connection hits sqlx's "Acquire is
        // not general enough" inside a spawned future.
        MIGRATOR.run_direct(&mut *conn).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    fn pool_stats(&self) -> PoolStats {
        self.readers.stats()
    }

    fn write_batches(&self) -> Option<(u64, u64)> {
        Some(self.writer.committed())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(Q::ping(&mut *self.reader().await?).await?)
    }

    async fn create_user(&self, user: NewUser, now: i64) -> StoreResult<i64> {
        self.write(user, move |conn, user| {
            Box::pin(Q::insert_user(conn, user, now))
        })
        .await?
        .map_err(StoreError::Conflict)
    }

    async fn find_credentials(&self, login: &str) -> StoreResult<Option<Credentials>> {
        Ok(Q::find_credentials(&mut *self.reader().await?, login).await?)
    }

    async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
        Ok(Q::list_users(&mut *self.reader().await?).await?)
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        Ok(self
            .write(session, |conn, session| {
                Box::pin(Q::insert_session(conn, session))
            })
            .await?)
    }

    async fn session_user(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionUser>> {
        Ok(Q::session_user(&mut *self.reader().await?, token_hash, now).await?)
    }

    async fn logout(&self, session: &SessionUser) -> StoreResult<()> {
        let (session_id, user_id) = (session.session_id, session.user_id);
        Ok(self
            .writer
            .write(move |conn| Box::pin(Q::logout(conn, session_id, user_id)))
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
            .write(
                (refresh_hash.to_owned(), next),
                move |conn, (hash, next)| {
                    Box::pin(Q::rotate_session(conn, hash, now, next, max_age))
                },
            )
            .await?)
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        Ok(self
            .writer
            .write(move |conn| Box::pin(Q::purge_expired_sessions(conn, now)))
            .await?)
    }

    async fn change_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep: Option<i64>,
    ) -> StoreResult<u64> {
        Ok(self
            .write(password_hash.to_owned(), move |conn, hash| {
                Box::pin(Q::change_password(conn, user_id, hash, keep))
            })
            .await?)
    }

    async fn revoke_sessions(&self, user_id: i64) -> StoreResult<u64> {
        Ok(self
            .writer
            .write(move |conn| Box::pin(Q::revoke_sessions(conn, user_id)))
            .await?)
    }

    async fn delete_user(&self, user_id: i64) -> StoreResult<Option<DeletedUser>> {
        Ok(self
            .writer
            .write(move |conn| Box::pin(Q::delete_user(conn, user_id)))
            .await?)
    }

    async fn push_tokens(&self, family: Family, user_id: i64) -> StoreResult<Vec<PushTokenRow>> {
        Ok(Q::push_tokens(&mut *self.reader().await?, family, user_id).await?)
    }

    async fn session_push_tokens(
        &self,
        family: Family,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Vec<PushTokenRow>>> {
        Ok(Q::session_push_tokens(&mut *self.reader().await?, family, token_hash, now).await?)
    }

    /// Two fixed statements (see [`PUT`]).
    async fn put_push_token(&self, write: PushTokenWrite, serial: i64) -> StoreResult<Written> {
        let bind = move |args: &mut SqliteArguments<'static>| {
            let input = &write.input;
            args.add(input.push_token.clone())?;
            args.add(input.language.clone())?;
            args.add(input.dev)?;
            args.add(input.bundleid.clone())?;
            args.add(input.os.clone())?;
            args.add(input.os_token.clone())?;
            args.add(input.push_platform.clone())?;
            args.add(input.phone_model.clone())?;
            args.add(write.now)?;
            args.add(write.user_id)?;
            args.add(write.family.as_str())?;
            args.add(serial)?;
            args.add(write.default_bundleid.clone())
        };
        Ok(self
            .writer
            .write_statements(&PUT, bind, put_outcome)
            .await?)
    }

    async fn post_push_token(&self, write: PushTokenWrite) -> StoreResult<Written> {
        self.write(write, |conn, write| Box::pin(Q::post_row(conn, write)))
            .await?
            .ok_or(StoreError::Conflict("serial"))
    }

    async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool> {
        let bind = move |args: &mut SqliteArguments<'static>| {
            args.add(user_id)?;
            args.add(family.as_str())?;
            args.add(serial)
        };
        let deleted = |outcomes: Vec<Outcome>| Ok(changes(&outcomes) > 0);
        Ok(self
            .writer
            .write_statements(&DELETE_AT, bind, deleted)
            .await?)
    }

    async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64> {
        let bind = move |args: &mut SqliteArguments<'static>| {
            args.add(user_id)?;
            args.add(family.as_str())
        };
        let deleted = |outcomes: Vec<Outcome>| Ok(changes(&outcomes));
        Ok(self
            .writer
            .write_statements(&DELETE_ALL, bind, deleted)
            .await?)
    }

    /// A write of the writer's like any other: a batch of at most `limit`
    /// rows holds the writer no longer than a handful of PUTs would.
    async fn delete_stale_push_tokens(&self, before: i64, limit: i64) -> StoreResult<ByFamily> {
        Ok(self
            .writer
            .write(move |conn| Box::pin(Q::delete_stale_push_tokens(conn, before, limit)))
            .await?)
    }

    async fn count_push_tokens(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(Q::count_push_tokens(&mut *self.reader().await?).await?)
    }

    async fn count_active_sessions(&self, now: i64) -> StoreResult<i64> {
        Ok(Q::count_active_sessions(&mut *self.reader().await?, now).await?)
    }

    async fn stats(&self, now: i64) -> StoreResult<Stats> {
        Ok(Q::stats(&mut *self.reader().await?, now).await?)
    }

    /// On a read connection, in a read transaction: one snapshot of the
    /// file, while the server's writes (if it runs) go on beside it.
    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<u64> {
        let mut conn = self.reader().await?;
        let mut tx = conn.begin().await?;
        let records = Transfer::<Sqlite>::export(&mut *tx, out).await;
        tx.rollback().await?;
        records
    }

    /// On a read connection too: the writer's batches are for the
    /// server's small writes, and nothing else writes meanwhile (the
    /// import's first statement takes the write lock).
    async fn import(
        &self,
        input: &mut (dyn tokio::io::AsyncBufRead + Send + Unpin),
    ) -> anyhow::Result<Imported> {
        let mut conn = self.reader().await?;
        let mut tx = conn.begin().await?;
        match Transfer::<Sqlite>::import(&mut *tx, input).await {
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
        Ok(self
            .write(
                (name.to_owned(), candidate.to_owned()),
                move |conn, (name, candidate)| {
                    Box::pin(Q::server_secret(conn, name, candidate, now))
                },
            )
            .await?)
    }

    async fn register_socket_client(&self, client: &SocketClient) -> StoreResult<()> {
        Ok(self
            .write(client.clone(), |conn, client| {
                Box::pin(Q::register_socket_client(conn, client))
            })
            .await?)
    }

    async fn user_exists(&self, id: i64) -> StoreResult<bool> {
        Ok(Q::user_exists(&mut *self.reader().await?, id).await?)
    }

    async fn password_hash(&self, id: i64) -> StoreResult<Option<String>> {
        Ok(Q::password_hash(&mut *self.reader().await?, id).await?)
    }

    async fn prune_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
        push_token: &str,
        os_token: &str,
    ) -> StoreResult<bool> {
        let tokens = (push_token.to_owned(), os_token.to_owned());
        Ok(self
            .write(tokens, move |conn, (push_token, os_token)| {
                Box::pin(Q::prune_push_token(
                    conn, family, user_id, serial, push_token, os_token,
                ))
            })
            .await?)
    }

    async fn recipients(&self, user_id: i64, family: Family) -> StoreResult<Vec<Recipient>> {
        Ok(Q::recipients(&mut *self.reader().await?, user_id, family).await?)
    }

    async fn record_event(&self, event: NewEvent) -> StoreResult<i64> {
        Ok(self
            .write(event, |conn, event| Box::pin(Q::record_event(conn, event)))
            .await?)
    }

    async fn hold_socket(
        &self,
        token: &str,
        instance: &str,
        holder: &str,
        now: i64,
    ) -> StoreResult<Option<String>> {
        let args = (token.to_owned(), instance.to_owned(), holder.to_owned());
        Ok(self
            .write(args, move |conn, (token, instance, holder)| {
                Box::pin(Q::hold_socket(conn, token, instance, holder, now))
            })
            .await?)
    }

    async fn release_socket(&self, token: &str, holder: &str) -> StoreResult<()> {
        Ok(self
            .write(
                (token.to_owned(), holder.to_owned()),
                |conn, (token, holder)| Box::pin(Q::release_socket(conn, token, holder)),
            )
            .await?)
    }

    async fn queued_events(&self, token: &str, now: i64) -> StoreResult<Vec<QueuedEvent>> {
        Ok(Q::queued_events(&mut *self.reader().await?, token, now).await?)
    }

    async fn unqueue_events(&self, token: &str, sent: Vec<i64>) -> StoreResult<()> {
        Ok(self
            .write((token.to_owned(), sent), |conn, (token, sent)| {
                Box::pin(Q::unqueue_events(conn, token, sent))
            })
            .await?)
    }

    async fn events(
        &self,
        user_id: i64,
        uid: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        Ok(Q::events(&mut *self.reader().await?, user_id, uid, offset, limit).await?)
    }

    async fn purge_events(&self, before: i64, now: i64) -> StoreResult<PurgedEvents> {
        Ok(self
            .writer
            .write(move |conn| Box::pin(Q::purge_events(conn, before, now)))
            .await?)
    }

    async fn signal(&self, _: Channel, _: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn signals(&self, _: Channel) -> StoreResult<Option<BoxStream<'static, Option<String>>>> {
        Ok(None)
    }
}

/// `PUT`'s statements: the row at the serial is updated (absent optional
/// fields keep their stored values; see [`update_row_sql`]); if there was
/// none, it is inserted (absent optional fields take their defaults).
/// `OR REPLACE` deletes the row that held the token before, in the same
/// statement. (PostgreSQL does the same in one statement too, a function
/// of its migration 0007, `pushtoken_put_row`.) Arguments:
/// the token, language, dev, bundleid, os, os_token, push_platform,
/// phone_model (`NULL` when absent), now, user id, family, serial and the
/// default bundleid.
static PUT: LazyLock<Statements> = LazyLock::new(|| {
    let sql = format!(
        "{update}; \
         {insert} INTO push_tokens (user_id, family, serial, push_token, language, \
         dev, bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
         SELECT $10, $11, $12, $1, $2, COALESCE($3, 0), COALESCE($4, $13), COALESCE($5, ''), \
         COALESCE($6, ''), COALESCE($7, ''), COALESCE($8, ''), $9, $9 \
         WHERE NOT EXISTS (SELECT 1 FROM push_tokens \
                           WHERE user_id = $10 AND family = $11 AND serial = $12) \
         RETURNING {ROW_COLUMNS}",
        update = update_row_sql(Sqlite::UPDATE_ROW),
        insert = Sqlite::INSERT_ROW,
    );
    Statements::new("put", &sql)
});

static DELETE_AT: LazyLock<Statements> = LazyLock::new(|| Statements::new("delete-at", DELETE_ONE));

static DELETE_ALL: LazyLock<Statements> =
    LazyLock::new(|| Statements::new("delete-all", DELETE_FAMILY));

/// Rows the statements changed.
fn changes(outcomes: &[Outcome]) -> u64 {
    outcomes.iter().map(|o| o.changes).sum()
}

/// The updated row, or else the inserted one.
fn put_outcome(outcomes: Vec<Outcome>) -> Result<Written, sqlx::Error> {
    let mut outcomes = outcomes.into_iter();
    let (updated, inserted) = (outcomes.next(), outcomes.next());
    if let Some(row) = updated.as_ref().and_then(|o| o.rows.first()) {
        return Ok(Written::Updated(PushTokenRow::from_row(row)?));
    }
    match inserted.as_ref().and_then(|o| o.rows.first()) {
        Some(row) => Ok(Written::Created(PushTokenRow::from_row(row)?)),
        None => Err(sqlx::Error::RowNotFound),
    }
}
