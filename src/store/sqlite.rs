//! The SQLite backend: one file in WAL mode; reads on a pool of
//! connections, writes through one writer task that commits them in
//! batches (`writer.rs`).

use std::str::FromStr;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Sqlite, SqliteConnection, SqlitePool};

use super::queries::{job, queries, SessionTokenRow, ROW_COLUMNS, SESSION_ROW_COLUMNS};
use super::writer::Writer;
use super::{
    Credentials, Family, NewSession, NewUser, PoolOptions, PoolStats, PushTokenRow, PushTokenWrite,
    SessionUser, StoreError, StoreResult, UserSummary, Written,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Writer,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.acquire_timeout);
        let path = connect.get_filename();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create database folder {}: {e}", dir.display())
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A connection to a local file cannot go stale, and a ping is a
            // round trip to the connection's worker thread.
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await?;
        let writer = Writer::start(connect.connect().await?, options.acquire_timeout);
        Ok(Self { pool, writer })
    }

    /// Committed write batches and the writes they held.
    pub fn write_batches(&self) -> (u64, u64) {
        self.writer.committed()
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
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
