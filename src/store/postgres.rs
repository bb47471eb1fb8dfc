//! The PostgreSQL backend: a bounded pool shared by any number of server
//! instances; startup waits for the database to come up.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::queries::{
    backoff, is_retryable, queries, SessionTokenRow, ROW_COLUMNS, SESSION_ROW_COLUMNS,
    WRITE_ATTEMPTS,
};
use super::{
    Credentials, Family, NewSession, NewUser, PoolOptions, PoolStats, PushTokenRow, PushTokenWrite,
    SessionUser, StoreError, StoreResult, UserSummary, Written,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects, retrying with backoff for up to `options.startup_timeout`
    /// while the server is not reachable yet (compose start order).
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        let connect = PgConnectOptions::from_str(url)?.application_name("pushtoken");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
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
        conn: &mut sqlx::PgConnection,
        write: &PushTokenWrite<'_>,
    ) -> Result<(), sqlx::Error> {
        let family = match write.family {
            Family::Ring => 0,
            Family::Message => 1,
        };
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(write.user_id.wrapping_mul(2).wrapping_add(family))
            .execute(conn)
            .await?;
        Ok(())
    }

    queries!(Postgres);
}
