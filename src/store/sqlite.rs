//! The SQLite backend: one file in WAL mode; reads on a small pool of
//! connections (`readers.rs`), writes through one writer, on a thread of
//! its own, that commits them in batches (`writer.rs`).

use std::str::FromStr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Sqlite, SqliteConnection};

use super::queries::{job, queries, SessionTokenRow, ROW_COLUMNS, SESSION_ROW_COLUMNS};
use super::readers::{Reader, Readers};
use super::writer::Writer;
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
        let writer = Writer::start(connect.connect().await?, options.acquire_timeout)?;
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

    queries!(Sqlite);
}
