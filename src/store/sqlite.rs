//! The SQLite backend: one file in WAL mode; reads on a small pool of
//! connections (`readers.rs`), writes through one writer, on a thread of
//! its own, that commits them in batches (`writer.rs`). `PUT` and the
//! deletes are fixed statements, which the writer runs many to a command.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Arguments, ConnectOptions, FromRow, Sqlite, SqliteConnection};

use super::queries::{
    job, queries, update_row_sql, SessionTokenRow, DELETE_FAMILY, DELETE_ONE, ROW_COLUMNS,
    SESSION_ROW_COLUMNS,
};
use super::readers::{Reader, Readers};
use super::writer::{Outcome, Statements, Writer, ROW_BUFFER};
use super::{
    Credentials, Family, NewSession, NewUser, PoolOptions, PoolStats, PushTokenRow, PushTokenWrite,
    SessionUser, StoreError, StoreResult, UserSummary, Written,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: Writer,
}

impl SqliteStore {
    /// `OR REPLACE`: a row clashing on `UNIQUE (family, push_token)` is
    /// deleted by the statement that stores the token (no trigger or
    /// foreign key refers to `push_tokens`, so nothing else is touched).
    const UPDATE_ROW: &str = "UPDATE OR REPLACE";
    const INSERT_ROW: &str = "INSERT OR REPLACE";
    const REPLACES_TOKEN_HOLDER: bool = true;

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
        let path = connect.get_filename();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create database folder {}: {e}", dir.display())
            })?;
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

    /// A connection for a read.
    async fn reader(&self) -> Result<Reader, sqlx::Error> {
        self.readers.acquire().await
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.readers.stats()
    }

    /// Committed write batches and the writes they held.
    pub fn write_batches(&self) -> (u64, u64) {
        self.writer.committed()
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.reader().await?;
        // `run_direct`: `run` on a `&mut` connection hits sqlx's "Acquire is
        // not general enough" inside a spawned future.
        MIGRATOR.run_direct(&mut *conn).await?;
        Ok(())
    }

    /// Runs `job` in the writer's next batch: a transaction of its own
    /// within the batch's.
    async fn write<T, F>(&self, job: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        self.writer.write(job).await
    }

    /// A single statement: the same as [`Self::write`] here.
    async fn write_one<T, F>(&self, job: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        self.writer.write(job).await
    }

    /// Nothing to do: all writes run one after another on the writer.
    async fn lock_family(_: &mut SqliteConnection, _: Family, _: i64) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// `PUT`: updates the row at `serial`, or creates it, in two fixed
    /// statements (see [`PUT`]).
    pub async fn put_push_token(&self, write: PushTokenWrite, serial: i64) -> StoreResult<Written> {
        let bind = move |args: &mut sqlx::sqlite::SqliteArguments<'static>| {
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

    pub async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool> {
        let bind = move |args: &mut sqlx::sqlite::SqliteArguments<'static>| {
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

    pub async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64> {
        let bind = move |args: &mut sqlx::sqlite::SqliteArguments<'static>| {
            args.add(user_id)?;
            args.add(family.as_str())
        };
        let deleted = |outcomes: Vec<Outcome>| Ok(changes(&outcomes));
        Ok(self
            .writer
            .write_statements(&DELETE_ALL, bind, deleted)
            .await?)
    }

    queries!(Sqlite);
}

/// `PUT`'s statements: the row at the serial is updated (absent optional
/// fields keep their stored values; see [`update_row_sql`]); if there was
/// none, it is inserted (absent optional fields take their defaults). `OR REPLACE` deletes the
/// row that held the token before, in the same statement. Arguments: the
/// token, language, dev, bundleid, os, os_token, push_platform,
/// phone_model (`NULL` when absent), now, user id, family, serial and the
/// default bundleid.
static PUT: LazyLock<Statements> = LazyLock::new(|| Statements {
    name: "put",
    sql: format!(
        "{update}; \
         INSERT OR REPLACE INTO push_tokens (user_id, family, serial, push_token, language, \
         dev, bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
         SELECT $10, $11, $12, $1, $2, COALESCE($3, 0), COALESCE($4, $13), COALESCE($5, ''), \
         COALESCE($6, ''), COALESCE($7, ''), COALESCE($8, ''), $9, $9 \
         WHERE NOT EXISTS (SELECT 1 FROM push_tokens \
                           WHERE user_id = $10 AND family = $11 AND serial = $12) \
         RETURNING {ROW_COLUMNS}",
        update = update_row_sql(SqliteStore::UPDATE_ROW),
    ),
    params: 13,
    statements: 2,
});

static DELETE_AT: LazyLock<Statements> = LazyLock::new(|| Statements {
    name: "delete-at",
    sql: DELETE_ONE.to_owned(),
    params: 3,
    statements: 1,
});

static DELETE_ALL: LazyLock<Statements> = LazyLock::new(|| Statements {
    name: "delete-all",
    sql: DELETE_FAMILY.to_owned(),
    params: 2,
    statements: 1,
});

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
