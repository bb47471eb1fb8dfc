//! The SQLite backend: one file in WAL mode, writes in short transactions
//! that take the write lock with their first statement.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{
    Credentials, Family, NewSession, NewUser, PoolOptions, PushTokenRow, PushTokenWrite,
    SessionUser, StoreError, StoreResult, UserSummary, Written,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const ROW_COLUMNS: &str = "user_id, serial, push_token, language, dev, bundleid, os, os_token, \
     push_platform, phone_model, created_at, updated_at";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
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
            .connect_with(connect)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn create_user(&self, user: &NewUser, now: i64) -> StoreResult<i64> {
        let inserted = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, email, phone, realm, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(&user.email)
        .bind(&user.phone)
        .bind(&user.realm)
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(id) => Ok(id),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(self.taken_field(user).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Which of a new user's unique values is already taken.
    async fn taken_field(&self, user: &NewUser) -> StoreResult<&'static str> {
        let (username, email, phone): (bool, bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1), \
                    EXISTS (SELECT 1 FROM users WHERE email = ?2), \
                    EXISTS (SELECT 1 FROM users WHERE phone = ?3)",
        )
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.phone)
        .fetch_one(&self.pool)
        .await?;
        Ok(if username || !(email || phone) {
            "username"
        } else if email {
            "email"
        } else {
            "phone"
        })
    }

    pub async fn find_credentials(&self, login: &str) -> StoreResult<Option<Credentials>> {
        Ok(sqlx::query_as(
            "SELECT id, password_hash FROM users WHERE username = ?1 \
             UNION ALL SELECT id, password_hash FROM users WHERE email = ?1 \
             UNION ALL SELECT id, password_hash FROM users WHERE phone = ?1 LIMIT 1",
        )
        .bind(login)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
        Ok(
            sqlx::query_as("SELECT id, username, email, phone, created_at FROM users ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn create_session(&self, session: &NewSession) -> StoreResult<()> {
        insert_session(&self.pool, session).await
    }

    pub async fn session_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<SessionUser>> {
        Ok(sqlx::query_as(
            "SELECT s.id AS session_id, s.user_id, u.username FROM sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires_at > ?",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn logout(&self, session: &SessionUser) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(session.session_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM push_tokens WHERE user_id = ?")
            .bind(session.user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn rotate_session(
        &self,
        refresh_hash: &str,
        now: i64,
        mut next: NewSession,
    ) -> StoreResult<Option<NewSession>> {
        let mut tx = self.pool.begin().await?;
        let user_id: Option<i64> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE refresh_hash = ? AND refresh_expires_at > ? RETURNING user_id",
        )
        .bind(refresh_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        next.user_id = user_id;
        insert_session(&mut *tx, &next).await?;
        tx.commit().await?;
        Ok(Some(next))
    }

    pub async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM sessions WHERE refresh_expires_at <= ?")
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    pub async fn list_push_tokens(
        &self,
        family: Family,
        user_id: i64,
    ) -> StoreResult<Vec<PushTokenRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM push_tokens WHERE user_id = ? AND family = ? ORDER BY serial"
        ))
        .bind(user_id)
        .bind(family.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn put_push_token(
        &self,
        write: &PushTokenWrite<'_>,
        serial: i64,
    ) -> StoreResult<Written> {
        let mut tx = self.pool.begin().await?;
        // The token leaves any other row that holds it: the caller's at
        // another serial (a move) or another user's (a takeover).
        sqlx::query(
            "DELETE FROM push_tokens WHERE family = ? AND push_token = ? \
             AND NOT (user_id = ? AND serial = ?)",
        )
        .bind(write.family.as_str())
        .bind(&write.input.push_token)
        .bind(write.user_id)
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM push_tokens WHERE user_id = ? AND family = ? AND serial = ?)",
        )
        .bind(write.user_id)
        .bind(write.family.as_str())
        .bind(serial)
        .fetch_one(&mut *tx)
        .await?;
        let written = store_row(&mut tx, write, serial, exists).await?;
        tx.commit().await?;
        Ok(written)
    }

    pub async fn post_push_token(&self, write: &PushTokenWrite<'_>) -> StoreResult<Written> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM push_tokens WHERE family = ? AND push_token = ? AND user_id <> ?")
            .bind(write.family.as_str())
            .bind(&write.input.push_token)
            .bind(write.user_id)
            .execute(&mut *tx)
            .await?;
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT serial FROM push_tokens WHERE family = ? AND push_token = ? AND user_id = ?",
        )
        .bind(write.family.as_str())
        .bind(&write.input.push_token)
        .bind(write.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let written = match held {
            Some(serial) => store_row(&mut tx, write, serial, true).await?,
            None => {
                let highest: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(serial) FROM push_tokens WHERE user_id = ? AND family = ?",
                )
                .bind(write.user_id)
                .bind(write.family.as_str())
                .fetch_one(&mut *tx)
                .await?;
                let serial = match highest {
                    None => 1,
                    Some(n) => n.checked_add(1).ok_or(StoreError::Conflict("serial"))?,
                };
                store_row(&mut tx, write, serial, false).await?
            }
        };
        tx.commit().await?;
        Ok(written)
    }

    pub async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM push_tokens WHERE user_id = ? AND family = ? AND serial = ?")
                .bind(user_id)
                .bind(family.as_str())
                .bind(serial)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM push_tokens WHERE user_id = ? AND family = ?")
            .bind(user_id)
            .bind(family.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

async fn insert_session<'e>(
    executor: impl sqlx::Executor<'e, Database = Sqlite>,
    session: &NewSession,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (user_id, token_hash, refresh_hash, created_at, expires_at, refresh_expires_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(session.user_id)
    .bind(&session.token_hash)
    .bind(&session.refresh_hash)
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(session.refresh_expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Inserts the row at `serial`, or updates it when it `exists` (absent
/// optional fields then keep their stored values).
async fn store_row(
    tx: &mut Transaction<'_, Sqlite>,
    write: &PushTokenWrite<'_>,
    serial: i64,
    exists: bool,
) -> StoreResult<Written> {
    let input = write.input;
    if exists {
        let row = sqlx::query_as(&format!(
            "UPDATE push_tokens SET push_token = ?, language = ?, dev = COALESCE(?, dev), \
             bundleid = COALESCE(?, bundleid), os = COALESCE(?, os), os_token = COALESCE(?, os_token), \
             push_platform = COALESCE(?, push_platform), phone_model = COALESCE(?, phone_model), \
             updated_at = ? WHERE user_id = ? AND family = ? AND serial = ? RETURNING {ROW_COLUMNS}"
        ))
        .bind(&input.push_token)
        .bind(&input.language)
        .bind(input.dev)
        .bind(&input.bundleid)
        .bind(&input.os)
        .bind(&input.os_token)
        .bind(&input.push_platform)
        .bind(&input.phone_model)
        .bind(write.now)
        .bind(write.user_id)
        .bind(write.family.as_str())
        .bind(serial)
        .fetch_one(&mut **tx)
        .await?;
        Ok(Written::Updated(row))
    } else {
        let row = sqlx::query_as(&format!(
            "INSERT INTO push_tokens (user_id, family, serial, push_token, language, dev, bundleid, \
             os, os_token, push_platform, phone_model, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {ROW_COLUMNS}"
        ))
        .bind(write.user_id)
        .bind(write.family.as_str())
        .bind(serial)
        .bind(&input.push_token)
        .bind(&input.language)
        .bind(input.dev.unwrap_or(0))
        .bind(input.bundleid.as_deref().unwrap_or(write.default_bundleid))
        .bind(input.os.as_deref().unwrap_or(""))
        .bind(input.os_token.as_deref().unwrap_or(""))
        .bind(input.push_platform.as_deref().unwrap_or(""))
        .bind(input.phone_model.as_deref().unwrap_or(""))
        .bind(write.now)
        .bind(write.now)
        .fetch_one(&mut **tx)
        .await?;
        Ok(Written::Created(row))
    }
}
