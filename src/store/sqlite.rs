//! The SQLite backend: one file in WAL mode; reads on a small pool of
//! connections (`readers.rs`), writes through one writer, on a thread of
//! its own, that commits them in batches (`writer/`). `PUT`, `POST`, the
//! deletes of push tokens and the events' writes are fixed statements,
//! which the writer runs many to a command; the other queries are the
//! shared ones of `queries.rs`.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Arguments, ConnectOptions, Connection, FromRow, Sqlite, SqliteConnection};

use super::queries::{
    update_held_row_sql, update_row_sql, Dialect, Queries, DELETE_FAMILY, DELETE_ONE, ROW_COLUMNS,
};
use super::readers::{Reader, Readers};
use super::transfer::{Imported, Transfer};
use super::writer::{Outcome, Statements, Writer, ROW_BUFFER};
use super::{
    recipients_of, Backend, ByFamily, Channel, Credentials, Database, DeletedUser, EventRecord,
    Family, NewEvent, NewSession, NewUser, PoolOptions, PoolStats, PurgedEvents, PushTokenRow,
    PushTokenWrite, QueuedEvent, Recipient, Rotation, SessionUser, SocketClient, Stats, StoreError,
    StoreResult, UserKey, UserSummary, Written,
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
            bind_row(&write, args)?;
            args.add(serial)?;
            args.add(write.default_bundleid.clone())
        };
        Ok(self
            .writer
            .write_statements(&PUT, bind, put_outcome)
            .await?)
    }

    /// Two fixed statements (see [`POST`]); `Conflict("serial")`, with
    /// nothing written, when the token is new to the caller and no serial
    /// is left.
    async fn post_push_token(&self, write: PushTokenWrite) -> StoreResult<Written> {
        let bind = move |args: &mut SqliteArguments<'static>| {
            bind_row(&write, args)?;
            args.add(write.default_bundleid.clone())
        };
        self.writer
            .write_statements(&POST, bind, post_outcome)
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

    async fn recipients(
        &self,
        user: UserKey<'_>,
        family: Family,
    ) -> StoreResult<Option<(i64, Vec<Recipient>)>> {
        let rows = Q::recipients(&mut *self.reader().await?, user, family).await?;
        Ok(recipients_of(rows))
    }

    /// Two fixed statements (see [`RECORD_EVENT`]): events recorded
    /// together share commands, as PUTs do.
    async fn record_event(&self, event: NewEvent) -> StoreResult<i64> {
        let queue =
            serde_json::to_string(&event.queue).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let bind = move |args: &mut SqliteArguments<'static>| {
            args.add(event.user_id)?;
            args.add(event.family.as_str())?;
            args.add(event.kind.clone())?;
            args.add(event.uid.clone())?;
            args.add(event.time)?;
            args.add(event.body.clone())?;
            args.add(event.created_at)?;
            args.add(event.recorded_ms)?;
            args.add(queue.clone())
        };
        Ok(self
            .writer
            .write_statements(&RECORD_EVENT, bind, recorded_id)
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

    /// One fixed statement (see [`UNQUEUE`]).
    async fn unqueue_events(&self, token: &str, sent: Vec<i64>) -> StoreResult<()> {
        let (token, sent) = (
            token.to_owned(),
            serde_json::to_string(&sent).map_err(|e| sqlx::Error::Encode(e.into()))?,
        );
        let bind = move |args: &mut SqliteArguments<'static>| {
            args.add(token.clone())?;
            args.add(sent.clone())
        };
        Ok(self
            .writer
            .write_statements(&UNQUEUE, bind, |_| Ok(()))
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
        "{update}; {insert}",
        update = update_row_sql(Sqlite::UPDATE_ROW),
        insert = insert_row_sql(
            "$12",
            "$13",
            "WHERE NOT EXISTS (SELECT 1 FROM push_tokens \
                               WHERE user_id = $10 AND family = $11 AND serial = $12)",
        ),
    );
    Statements::new("put", &sql)
});

/// The insert of `PUT` and `POST`: the row of user id `$10`, family `$11`
/// at `serial` (an expression) holding the token `$1`, language `$2`, the
/// optional fields `$3` to `$8` (`NULL` takes the default: 0, `bundleid`
/// the default bundleid `bundleid` (a placeholder), else `''`), created and
/// updated at `$9`, returning the row. `from_where` (the clauses after the
/// `SELECT`'s values) decides whether there is a row to insert; `OR
/// REPLACE` deletes the row that held the token before, in the same
/// statement.
fn insert_row_sql(serial: &str, bundleid: &str, from_where: &str) -> String {
    format!(
        "{insert} INTO push_tokens (user_id, family, serial, push_token, language, \
         dev, bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
         SELECT $10, $11, {serial}, $1, $2, COALESCE($3, 0), COALESCE($4, {bundleid}), \
         COALESCE($5, ''), COALESCE($6, ''), COALESCE($7, ''), COALESCE($8, ''), $9, $9 \
         {from_where} \
         RETURNING {ROW_COLUMNS}",
        insert = Sqlite::INSERT_ROW,
    )
}

/// Binds `$1` to `$11` of `PUT` and `POST`: the token, language, dev,
/// bundleid, os, os_token, push_platform, phone_model (`NULL` when absent),
/// now, user id and family.
fn bind_row(
    write: &PushTokenWrite,
    args: &mut SqliteArguments<'static>,
) -> Result<(), BoxDynError> {
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
    args.add(write.family.as_str())
}

/// `POST`'s statements, which the token makes exclusive: the caller's row
/// holding the token, if there is one, is updated (as `PUT` updates); if
/// there was none, a row is inserted at the caller's highest serial of the
/// family plus one (1 when they have none), as `PUT` inserts, unless that
/// highest serial is the largest int64: then neither writes, and the write
/// is answered `None` (no serial left). The insert's serial is above every
/// one of the caller's, so its `OR REPLACE` can only delete another user's
/// row holding the token. The writer runs writes one after another, and the
/// statements of one in order, so the highest serial the insert reads
/// counts every earlier write's rows, those of its own batch and command
/// included; PostgreSQL, whose POSTs run side by side, locks the user's
/// family instead (`pushtoken_register_rows`, migration 0008). The guard on the largest int64
/// keeps `MAX(serial) + 1` from overflowing (SQLite would make it a real).
/// (`MAX` alone in its sub-select reads one entry of the primary key, the
/// user's highest; inside `COALESCE`, or in a `FROM` sub-select, SQLite
/// reads all of the user's rows of the family.)
/// Arguments: those of `PUT` but the serial; `$12` the default bundleid.
static POST: LazyLock<Statements> = LazyLock::new(|| {
    let sql = format!(
        "{update}; {insert}",
        update = update_held_row_sql(Sqlite::UPDATE_ROW),
        insert = insert_row_sql(
            "top.serial + 1",
            "$12",
            "FROM (SELECT COALESCE((SELECT MAX(serial) FROM push_tokens \
                                    WHERE user_id = $10 AND family = $11), 0) AS serial) AS top \
             WHERE top.serial < 9223372036854775807 \
             AND NOT EXISTS (SELECT 1 FROM push_tokens \
                             WHERE user_id = $10 AND family = $11 AND push_token = $1)",
        ),
    );
    Statements::new("post", &sql)
});

/// `record_event`'s statements: the event (user id `$1`, family `$2`,
/// type `$3`, uid `$4`, time `$5`, body `$6`, created at `$7`, recorded at
/// `$8` ms), returning its id, then its queue rows, one for each `[token,
/// expires_at]` pair of the JSON array `$9`. The queue rows name the
/// highest event id, which is the event's own: the writer runs writes one
/// after another, and the statements of one in order.
static RECORD_EVENT: LazyLock<Statements> = LazyLock::new(|| {
    Statements::new(
        "record-event",
        "INSERT INTO events (user_id, family, type, uid, time, body, created_at, recorded_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id; \
         INSERT INTO queued_events (token, event_id, expires_at) \
         SELECT q.value ->> 0, (SELECT MAX(id) FROM events), q.value ->> 1 \
         FROM json_each($9) AS q",
    )
});

/// Takes the events whose ids the JSON array `$2` lists off token `$1`'s
/// queue, those and no other (see `Queries::unqueue_events`).
static UNQUEUE: LazyLock<Statements> = LazyLock::new(|| {
    Statements::new(
        "unqueue",
        "DELETE FROM queued_events \
         WHERE token = $1 AND event_id IN (SELECT value FROM json_each($2))",
    )
});

static DELETE_AT: LazyLock<Statements> = LazyLock::new(|| Statements::new("delete-at", DELETE_ONE));

static DELETE_ALL: LazyLock<Statements> =
    LazyLock::new(|| Statements::new("delete-all", DELETE_FAMILY));

/// Rows the statements changed.
fn changes(outcomes: &[Outcome]) -> u64 {
    outcomes.iter().map(|o| o.changes).sum()
}

/// The id `RECORD_EVENT`'s insert returned.
fn recorded_id(outcomes: Vec<Outcome>) -> Result<i64, sqlx::Error> {
    use sqlx::Row;
    match outcomes.first().and_then(|o| o.rows.first()) {
        Some(row) => row.try_get(0),
        None => Err(sqlx::Error::RowNotFound),
    }
}

/// The updated row, or else the inserted one.
fn put_outcome(outcomes: Vec<Outcome>) -> Result<Written, sqlx::Error> {
    written(outcomes)?.ok_or(sqlx::Error::RowNotFound)
}

/// The updated row, or else the inserted one, or `None` when neither
/// statement wrote (no serial left). `None` is an answer, not a failure:
/// the write succeeds having changed nothing, and the other writes of its
/// batch are not rolled back and run again for it.
fn post_outcome(outcomes: Vec<Outcome>) -> Result<Option<Written>, sqlx::Error> {
    written(outcomes)
}

/// The row the first statement (an update) returned, else the one the
/// second (an insert) returned, if any.
fn written(outcomes: Vec<Outcome>) -> Result<Option<Written>, sqlx::Error> {
    let mut outcomes = outcomes.into_iter();
    let (updated, inserted) = (outcomes.next(), outcomes.next());
    if let Some(row) = updated.as_ref().and_then(|o| o.rows.first()) {
        return Ok(Some(Written::Updated(PushTokenRow::from_row(row)?)));
    }
    match inserted.as_ref().and_then(|o| o.rows.first()) {
        Some(row) => Ok(Some(Written::Created(PushTokenRow::from_row(row)?))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::future::join_all;

    use super::*;
    use crate::model::PushTokenInput;

    const DEFAULT_BUNDLEID: &str = "com.example.default";

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}/store.db", dir.path().display());
        let options = PoolOptions {
            max_connections: 2,
            sqlite_full_sync: false,
            acquire_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(10),
        };
        let store = SqliteStore::connect(&url, &options).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    async fn user(store: &SqliteStore, name: &str) -> i64 {
        let user = NewUser {
            username: name.to_owned(),
            password_hash: "x".to_owned(),
            email: None,
            phone: None,
            realm: None,
        };
        store.create_user(user, 0).await.unwrap()
    }

    /// A registration of `token` with the required fields only, at `now`.
    fn write(family: Family, user_id: i64, token: &str, now: i64) -> PushTokenWrite {
        PushTokenWrite {
            family,
            user_id,
            input: PushTokenInput {
                push_token: token.to_owned(),
                language: "en".to_owned(),
                dev: None,
                bundleid: None,
                os: None,
                os_token: None,
                push_platform: None,
                phone_model: None,
            },
            default_bundleid: DEFAULT_BUNDLEID.to_owned(),
            now,
        }
    }

    /// The user's (serial, token) of the family.
    async fn held(store: &SqliteStore, family: Family, user_id: i64) -> Vec<(i64, String)> {
        let rows = store.push_tokens(family, user_id).await.unwrap();
        rows.into_iter().map(|r| (r.serial, r.push_token)).collect()
    }

    fn created(written: StoreResult<Written>) -> PushTokenRow {
        match written {
            Ok(Written::Created(row)) => row,
            other => panic!("not created: {other:?}"),
        }
    }

    fn updated(written: StoreResult<Written>) -> PushTokenRow {
        match written {
            Ok(Written::Updated(row)) => row,
            other => panic!("not updated: {other:?}"),
        }
    }

    fn no_serial_left(written: StoreResult<Written>) {
        assert!(
            matches!(written, Err(StoreError::Conflict("serial"))),
            "{written:?}"
        );
    }

    #[tokio::test]
    async fn post_of_a_token_the_caller_holds_updates_that_row_keeping_absent_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let alice = user(&store, "alice").await;
        let mut full = write(Family::Ring, alice, "t1", 10);
        full.input = PushTokenInput {
            dev: Some(1),
            bundleid: Some("com.example.app".into()),
            os: Some("ios".into()),
            os_token: Some("os-token".into()),
            push_platform: Some("apns".into()),
            phone_model: Some("phone".into()),
            ..full.input
        };
        created(store.put_push_token(full, 5).await);
        created(
            store
                .put_push_token(write(Family::Ring, alice, "t2", 10), 9)
                .await,
        );

        let mut again = write(Family::Ring, alice, "t1", 20);
        again.input.language = "fr".into();
        again.input.os = Some("android".into());
        let row = updated(store.post_push_token(again).await);
        assert_eq!(row.user_id, alice);
        assert_eq!(row.serial, 5);
        assert_eq!(row.push_token, "t1");
        assert_eq!(row.language, "fr");
        assert_eq!(row.os, "android");
        assert_eq!(row.dev, 1);
        assert_eq!(row.bundleid, "com.example.app");
        assert_eq!(row.os_token, "os-token");
        assert_eq!(row.push_platform, "apns");
        assert_eq!(row.phone_model, "phone");
        assert_eq!((row.created_at, row.updated_at), (10, 20));
        let listed = store.push_tokens(Family::Ring, alice).await.unwrap();
        assert_eq!(listed[0], row);
        assert_eq!(
            held(&store, Family::Ring, alice).await,
            [(5, "t1".into()), (9, "t2".into())]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn post_of_a_new_token_creates_a_row_above_the_callers_highest_serial() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        created(
            store
                .put_push_token(write(Family::Ring, bob, "b", 1), 100)
                .await,
        );

        let row = created(
            store
                .post_push_token(write(Family::Ring, alice, "t1", 7))
                .await,
        );
        let defaults = PushTokenRow {
            user_id: alice,
            serial: 1,
            push_token: "t1".into(),
            language: "en".into(),
            dev: 0,
            bundleid: DEFAULT_BUNDLEID.into(),
            os: String::new(),
            os_token: String::new(),
            push_platform: String::new(),
            phone_model: String::new(),
            created_at: 7,
            updated_at: 7,
        };
        assert_eq!(row, defaults);
        let row = created(
            store
                .post_push_token(write(Family::Ring, alice, "t2", 7))
                .await,
        );
        assert_eq!(row.serial, 2);
        // The highest serial counts, not the number of rows.
        created(
            store
                .put_push_token(write(Family::Ring, alice, "t3", 7), 40)
                .await,
        );
        let row = created(
            store
                .post_push_token(write(Family::Ring, alice, "t4", 7))
                .await,
        );
        assert_eq!(row.serial, 41);
        // Only serial 0 held: the next is 1.
        created(
            store
                .put_push_token(write(Family::Message, bob, "m0", 7), 0)
                .await,
        );
        let row = created(
            store
                .post_push_token(write(Family::Message, bob, "m1", 7))
                .await,
        );
        assert_eq!(row.serial, 1);
        // Each family and each user counts alone.
        let row = created(
            store
                .post_push_token(write(Family::Message, alice, "m2", 7))
                .await,
        );
        assert_eq!(row.serial, 1);
        assert_eq!(
            held(&store, Family::Ring, alice).await,
            [
                (1, "t1".into()),
                (2, "t2".into()),
                (40, "t3".into()),
                (41, "t4".into())
            ]
        );
        assert_eq!(held(&store, Family::Ring, bob).await, [(100, "b".into())]);
        store.close().await;
    }

    #[tokio::test]
    async fn post_of_a_token_another_user_holds_takes_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        created(
            store
                .put_push_token(write(Family::Ring, alice, "a", 1), 1)
                .await,
        );
        created(
            store
                .put_push_token(write(Family::Ring, bob, "shared", 1), 1)
                .await,
        );
        created(
            store
                .put_push_token(write(Family::Ring, bob, "b", 1), 2)
                .await,
        );
        created(
            store
                .put_push_token(write(Family::Message, bob, "shared", 1), 1)
                .await,
        );

        let row = created(
            store
                .post_push_token(write(Family::Ring, alice, "shared", 2))
                .await,
        );
        assert_eq!((row.user_id, row.serial), (alice, 2));
        assert_eq!(
            held(&store, Family::Ring, alice).await,
            [(1, "a".into()), (2, "shared".into())]
        );
        assert_eq!(held(&store, Family::Ring, bob).await, [(2, "b".into())]);
        // The other family's row of the token is another row.
        assert_eq!(
            held(&store, Family::Message, bob).await,
            [(1, "shared".into())]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn post_with_no_serial_left_is_a_conflict_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        created(
            store
                .put_push_token(write(Family::Ring, alice, "top", 1), i64::MAX)
                .await,
        );
        created(
            store
                .put_push_token(write(Family::Ring, alice, "low", 1), 3)
                .await,
        );
        created(
            store
                .put_push_token(write(Family::Ring, bob, "bobs", 1), 1)
                .await,
        );

        no_serial_left(
            store
                .post_push_token(write(Family::Ring, alice, "new", 2))
                .await,
        );
        // Another user's token stays theirs: nothing was inserted, so
        // nothing was replaced.
        no_serial_left(
            store
                .post_push_token(write(Family::Ring, alice, "bobs", 2))
                .await,
        );
        assert_eq!(
            held(&store, Family::Ring, alice).await,
            [(3, "low".into()), (i64::MAX, "top".into())]
        );
        assert_eq!(held(&store, Family::Ring, bob).await, [(1, "bobs".into())]);
        // A token the caller holds is updated all the same.
        let row = updated(
            store
                .post_push_token(write(Family::Ring, alice, "top", 3))
                .await,
        );
        assert_eq!((row.serial, row.updated_at), (i64::MAX, 3));
        let row = updated(
            store
                .post_push_token(write(Family::Ring, alice, "low", 3))
                .await,
        );
        assert_eq!((row.serial, row.updated_at), (3, 3));
        // The other family has serials left.
        let row = created(
            store
                .post_push_token(write(Family::Message, alice, "new", 3))
                .await,
        );
        assert_eq!(row.serial, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn posts_in_one_batch_see_each_other_and_a_conflict_undoes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let carol = user(&store, "carol").await;
        created(
            store
                .put_push_token(write(Family::Ring, alice, "top", 1), i64::MAX)
                .await,
        );
        created(
            store
                .put_push_token(write(Family::Ring, carol, "c1", 1), 1)
                .await,
        );
        created(
            store
                .put_push_token(write(Family::Ring, carol, "c2", 1), 2)
                .await,
        );

        // A write that holds the writer until released, so that the writes
        // below queue meanwhile and are taken into one batch together.
        let started = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let hold = {
            let (started, release) = (started.clone(), release.clone());
            let writer = store.writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |_| {
                        let (started, release) = (started.clone(), release.clone());
                        Box::pin(async move {
                            started.notify_one();
                            let _ = release.acquire().await;
                            Ok(())
                        })
                    })
                    .await
            })
        };
        started.notified().await;
        let (batches, writes) = store.writer.committed();

        let spawn_post = |write: PushTokenWrite| {
            let store = store.clone();
            tokio::spawn(async move { store.post_push_token(write).await })
        };
        let mut posts = vec![spawn_post(write(Family::Ring, alice, "new", 2))];
        // Bob's POSTs share commands: each reads the serials of those
        // before it.
        posts.extend((1..=20).map(|n| spawn_post(write(Family::Ring, bob, &format!("b{n}"), 2))));
        // A takeover of carol's token, and an update of bob's first row.
        posts.push(spawn_post(write(Family::Ring, bob, "c1", 2)));
        posts.push(spawn_post(write(Family::Ring, bob, "b1", 3)));
        let put = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_push_token(write(Family::Ring, carol, "c3", 2), 7)
                    .await
            })
        };
        let queued = posts.len() + 1;
        while store.writer.queued() < queued {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.add_permits(1);
        hold.await.unwrap().unwrap();
        let mut posts = join_all(posts).await.into_iter().map(|p| p.unwrap());
        created(put.await.unwrap());

        no_serial_left(posts.next().unwrap());
        for n in 1..=20 {
            let row = created(posts.next().unwrap());
            assert_eq!((row.serial, row.push_token), (n, format!("b{n}")));
        }
        assert_eq!(created(posts.next().unwrap()).serial, 21);
        let row = updated(posts.next().unwrap());
        assert_eq!((row.serial, row.created_at, row.updated_at), (1, 2, 3));

        // The holding write's batch, then one of all the others, the
        // conflict among them: none failed (a failed write would be left
        // out of the count, its batch run again without it).
        let (after, written) = store.writer.committed();
        assert_eq!(after, batches + 2);
        assert_eq!(written, writes + 1 + queued as u64);
        assert_eq!(
            held(&store, Family::Ring, alice).await,
            [(i64::MAX, "top".into())]
        );
        let mut bobs: Vec<(i64, String)> = (1..=20).map(|n| (n, format!("b{n}"))).collect();
        bobs.push((21, "c1".into()));
        assert_eq!(held(&store, Family::Ring, bob).await, bobs);
        assert_eq!(
            held(&store, Family::Ring, carol).await,
            [(2, "c2".into()), (7, "c3".into())]
        );
        store.close().await;
    }

    /// An event for `user_id` queued for `tokens`, expiring at 100.
    fn event(user_id: i64, n: i64, tokens: &[String]) -> NewEvent {
        NewEvent {
            user_id,
            family: Family::Ring,
            kind: "call".to_owned(),
            uid: format!("door-{n}"),
            time: n,
            body: format!("{{\"n\":{n}}}"),
            created_at: 1,
            recorded_ms: 1000,
            queue: tokens.iter().map(|t| (t.clone(), 100)).collect(),
        }
    }

    /// (token, event id) of every queue row, in that order.
    async fn queue_rows(store: &SqliteStore) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT token, event_id FROM queued_events ORDER BY token, event_id")
            .fetch_all(&mut *store.reader().await.unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn events_recorded_together_each_queue_under_their_own_id_and_unqueue_takes_only_those_sent(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let (batches, _) = store.writer.committed();

        // 40 events at once, so that the writer takes many into one
        // command; event n is queued for n % 3 tokens of its own.
        let tokens =
            |n: i64| -> Vec<String> { (0..n % 3).map(|k| format!("t{n:02}-{k}")).collect() };
        let recorded = join_all((0..40).map(|n| {
            let store = store.clone();
            let user_id = if n % 2 == 0 { alice } else { bob };
            async move { store.record_event(event(user_id, n, &tokens(n))).await }
        }))
        .await;
        let ids: Vec<i64> = recorded.into_iter().map(Result::unwrap).collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 40);
        let (after, _) = store.writer.committed();
        assert!(
            after - batches < 40,
            "{} batches for 40 events",
            after - batches
        );

        let mut expected: Vec<(String, i64)> = (0..40)
            .flat_map(|n| tokens(n).into_iter().map(move |t| (t, n)))
            .map(|(t, n)| (t, ids[n as usize]))
            .collect();
        expected.sort();
        assert_eq!(queue_rows(&store).await, expected);
        // Each id names its own event.
        for (n, id) in ids.iter().enumerate() {
            let (uid, user_id): (String, i64) =
                sqlx::query_as("SELECT uid, user_id FROM events WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *store.reader().await.unwrap())
                    .await
                    .unwrap();
            let owner = if n % 2 == 0 { alice } else { bob };
            assert_eq!((uid, user_id), (format!("door-{n}"), owner));
        }

        // A token queued for two events: taking one off leaves the other,
        // and another token's rows.
        let shared = vec!["shared".to_owned()];
        let first = store.record_event(event(alice, 50, &shared)).await.unwrap();
        let second = store.record_event(event(alice, 51, &shared)).await.unwrap();
        store
            .unqueue_events("shared", vec![first, ids[1]])
            .await
            .unwrap();
        let rows = queue_rows(&store).await;
        assert!(rows.contains(&("shared".to_owned(), second)));
        assert!(!rows.contains(&("shared".to_owned(), first)));
        assert!(rows.contains(&("t01-0".to_owned(), ids[1])));
        store.unqueue_events("shared", vec![]).await.unwrap();
        assert_eq!(queue_rows(&store).await.len(), expected.len() + 1);
        store.close().await;
    }
}
