//! The PostgreSQL backend: a bounded pool shared by any number of server
//! instances; startup waits for the database to come up.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::queries::{
    backoff, is_retryable, job, queries, update_row_sql, SessionTokenRow, DELETE_FAMILY,
    DELETE_ONE, ROW_COLUMNS, SESSION_ROW_COLUMNS, WRITE_ATTEMPTS,
};
use super::{
    Credentials, Family, NewSession, NewUser, PoolOptions, PoolStats, PushTokenRow, PushTokenWrite,
    SessionUser, StoreError, StoreResult, UserSummary, Written,
};

/// How recently a pooled connection must have been in use to skip its
/// liveness check.
const RECENTLY_USED: Duration = Duration::from_secs(1);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    const UPDATE_ROW: &str = "UPDATE";
    const INSERT_ROW: &str = "INSERT";
    /// The token's other holder is deleted by a statement of its own.
    const REPLACES_TOKEN_HOLDER: bool = false;

    /// Connects, retrying with backoff for up to `options.startup_timeout`
    /// while the server is not reachable yet (compose start order).
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let connect = PgConnectOptions::from_str(url)?.application_name("pushtoken");
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
                Ok(_) => return Ok(Self { pool }),
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

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Serializes the writes to one user's family for the transaction:
    /// concurrent POSTs then read the highest serial one after another.
    /// (Lock keys: `user_id * 2 + family`, distinct for every user id below
    /// 2^62; pushtoken takes no other advisory locks.)
    async fn lock_family(
        conn: &mut PgConnection,
        family: Family,
        user_id: i64,
    ) -> Result<(), sqlx::Error> {
        let family = match family {
            Family::Ring => 0,
            Family::Message => 1,
        };
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(user_id.wrapping_mul(2).wrapping_add(family))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Runs `job` in a transaction of its own, again (after a short random
    /// pause) when it lost a race to a concurrent one.
    async fn write<T, F>(&self, mut job: F) -> Result<T, sqlx::Error>
    where
        T: Send,
        F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
    {
        let mut attempt = 1;
        loop {
            let outcome = async {
                let mut tx = self.pool.begin().await?;
                let out = job(&mut tx).await?;
                tx.commit().await?;
                Ok(out)
            }
            .await;
            match outcome {
                Err(e) if attempt < WRITE_ATTEMPTS && is_retryable(&e) => {
                    backoff(attempt).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Runs `job`, a single statement, on a pooled connection.
    async fn write_one<T, F>(&self, mut job: F) -> Result<T, sqlx::Error>
    where
        T: Send,
        F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
    {
        let mut conn = self.pool.acquire().await?;
        job(&mut conn).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A connection for a read.
    async fn reader(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.pool.acquire().await
    }

    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }

    /// `PUT`: the token leaves any other row that holds it (the caller's at
    /// another serial, a move, or another user's, a takeover), then the row
    /// at `serial` is updated, or created.
    pub async fn put_push_token(&self, write: PushTokenWrite, serial: i64) -> StoreResult<Written> {
        let write = Arc::new(write);
        Ok(self
            .write(job!(conn, write => {
                Self::lock_family(conn, write.family, write.user_id).await?;
                sqlx::query(
                    "DELETE FROM push_tokens WHERE family = $1 AND push_token = $2 \
                     AND NOT (user_id = $3 AND serial = $4)",
                )
                .bind(write.family.as_str())
                .bind(&write.input.push_token)
                .bind(write.user_id)
                .bind(serial)
                .execute(&mut *conn)
                .await?;
                match Self::update_row(conn, &write, serial).await? {
                    Some(row) => Ok(Written::Updated(row)),
                    None => Self::insert_row(conn, &write, serial).await.map(Written::Created),
                }
            }))
            .await?)
    }

    pub async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool> {
        Ok(self
            .write_one(job!(conn => {
                let done = sqlx::query(DELETE_ONE)
                    .bind(user_id)
                    .bind(family.as_str())
                    .bind(serial)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected() > 0)
            }))
            .await?)
    }

    pub async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64> {
        Ok(self
            .write_one(job!(conn => {
                let done = sqlx::query(DELETE_FAMILY)
                    .bind(user_id)
                    .bind(family.as_str())
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected())
            }))
            .await?)
    }

    queries!(Postgres);
}
