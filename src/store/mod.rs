//! Storage: one `Store` for the whole server, with one backend per database.
//!
//! Handlers only see `Store` and its plain data types; which database is
//! behind it is decided once, from the `DATABASE_URL` scheme.

mod postgres;
mod queries;
mod readers;
mod sqlite;
mod writer;

use std::time::Duration;

use serde::Serialize;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A storage failure as the HTTP layer needs to know it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is taken; the field that clashes.
    #[error("{0} exist")]
    Conflict(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The two push-token families: same behaviour, separate data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ring,
    Message,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ring, Family::Message];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ring => "ring",
            Family::Message => "message",
        }
    }
}

/// A new account, its password already hashed.
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub realm: Option<String>,
}

/// What login needs of an account.
#[derive(sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub password_hash: String,
}

/// An account as `pushtoken user list` shows it.
#[derive(sqlx::FromRow, Debug)]
pub struct UserSummary {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: i64,
}

/// A new session: the hashes of its token and refresh key, and its expiries.
#[derive(Clone)]
pub struct NewSession {
    pub user_id: i64,
    pub token_hash: String,
    pub refresh_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub refresh_expires_at: i64,
}

/// The user behind a live session.
#[derive(sqlx::FromRow, Clone, Debug)]
pub struct SessionUser {
    pub session_id: i64,
    pub user_id: i64,
    pub username: String,
}

/// One stored push token, as the API shows it.
#[derive(sqlx::FromRow, Serialize, utoipa::ToSchema, Clone, PartialEq, Eq)]
pub struct PushTokenRow {
    /// The owner's user id.
    #[serde(rename = "id")]
    pub user_id: i64,
    #[schema(minimum = 0)]
    pub serial: i64,
    pub push_token: String,
    pub language: String,
    #[schema(minimum = 0, maximum = 1)]
    pub dev: i64,
    pub bundleid: String,
    pub os: String,
    pub os_token: String,
    pub push_platform: String,
    pub phone_model: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for PushTokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTokenRow")
            .field("user_id", &self.user_id)
            .field("serial", &self.serial)
            .field("push_token", &"[redacted]")
            .field("language", &self.language)
            .field("dev", &self.dev)
            .field("bundleid", &self.bundleid)
            .field("os", &self.os)
            .field("os_token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A registration to store. Optional fields that are `None` take the default
/// on create and keep their stored value on update.
pub struct PushTokenWrite {
    pub family: Family,
    pub user_id: i64,
    pub input: crate::model::PushTokenInput,
    /// `bundleid` for a created row whose body has none.
    pub default_bundleid: String,
    pub now: i64,
}

/// Whether a write created a row or updated one.
#[derive(Debug)]
pub enum Written {
    Created(PushTokenRow),
    Updated(PushTokenRow),
}

/// Pool settings common to the backends.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// SQLite: `synchronous=FULL` (every commit synced) rather than
    /// `NORMAL` (the WAL synced at checkpoints).
    pub sqlite_full_sync: bool,
    /// How long a request waits for a connection (or SQLite for its lock)
    /// before it fails with 503.
    pub acquire_timeout: Duration,
    /// How long startup waits for a database server to become reachable.
    pub startup_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            sqlite_full_sync: true,
            acquire_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// How the connection pool is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (idle or in use).
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// The database kinds a `DATABASE_URL` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Calls the same method on whichever backend is in use.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens the database named by `url` (`sqlite:…` or `postgres://…`).
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Self> {
        match Backend::of_url(url) {
            Some(Backend::Sqlite) => Ok(Store::Sqlite(SqliteStore::connect(url, options).await?)),
            Some(Backend::Postgres) => Ok(Store::Postgres(PgStore::connect(url, options).await?)),
            None => {
                anyhow::bail!("unsupported DATABASE_URL scheme (expected sqlite: or postgres://)")
            }
        }
    }

    /// Applies the embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        dispatch!(self, s => s.migrate().await)
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self, s => s.ping().await)
    }

    pub async fn create_user(&self, user: NewUser, now: i64) -> StoreResult<i64> {
        dispatch!(self, s => s.create_user(user, now).await)
    }

    /// The account whose username, email or phone is `login`.
    pub async fn find_credentials(&self, login: &str) -> StoreResult<Option<Credentials>> {
        // No account name holds a NUL (PostgreSQL text cannot even compare one).
        if login.contains('\0') {
            return Ok(None);
        }
        dispatch!(self, s => s.find_credentials(login).await)
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
        dispatch!(self, s => s.list_users().await)
    }

    pub async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        dispatch!(self, s => s.create_session(session).await)
    }

    /// The user of the unexpired session whose token hashes to `token_hash`.
    pub async fn session_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<SessionUser>> {
        dispatch!(self, s => s.session_user(token_hash, now).await)
    }

    /// Revokes a session and deletes all of its user's push tokens, at once.
    pub async fn logout(&self, session: &SessionUser) -> StoreResult<()> {
        dispatch!(self, s => s.logout(session).await)
    }

    /// Swaps the session whose refresh key hashes to `refresh_hash` for
    /// `next` (whose `user_id` is filled in). `None` if no live session has
    /// that key.
    pub async fn rotate_session(
        &self,
        refresh_hash: &str,
        now: i64,
        next: NewSession,
    ) -> StoreResult<Option<NewSession>> {
        dispatch!(self, s => s.rotate_session(refresh_hash, now, next).await)
    }

    /// Deletes sessions whose refresh key has expired; returns how many.
    pub async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        dispatch!(self, s => s.purge_expired_sessions(now).await)
    }

    /// The push tokens of the user of the unexpired session whose token
    /// hashes to `token_hash`, looked up together; `None` without such a
    /// session.
    pub async fn session_push_tokens(
        &self,
        family: Family,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Vec<PushTokenRow>>> {
        dispatch!(self, s => s.session_push_tokens(family, token_hash, now).await)
    }

    /// `PUT {base}/{serial}`: creates or updates the row at `serial`.
    pub async fn put_push_token(&self, write: PushTokenWrite, serial: i64) -> StoreResult<Written> {
        dispatch!(self, s => s.put_push_token(write, serial).await)
    }

    /// `POST {base}`: updates the caller's row holding the token, or creates
    /// one at the next serial.
    pub async fn post_push_token(&self, write: PushTokenWrite) -> StoreResult<Written> {
        dispatch!(self, s => s.post_push_token(write).await)
    }

    /// How many push tokens each family holds (families with none omitted).
    pub async fn count_push_tokens(&self) -> StoreResult<Vec<(String, i64)>> {
        dispatch!(self, s => s.count_push_tokens().await)
    }

    pub async fn count_active_sessions(&self, now: i64) -> StoreResult<i64> {
        dispatch!(self, s => s.count_active_sessions(now).await)
    }

    pub fn pool_stats(&self) -> PoolStats {
        dispatch!(self, s => s.pool_stats())
    }

    /// SQLite: write transactions committed since start, and the writes
    /// they held (their ratio is the mean batch). `None` on PostgreSQL,
    /// where each write commits on its own.
    pub fn write_batches(&self) -> Option<(u64, u64)> {
        match self {
            Store::Sqlite(s) => Some(s.write_batches()),
            Store::Postgres(_) => None,
        }
    }

    pub async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.delete_push_token(family, user_id, serial).await)
    }

    pub async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64> {
        dispatch!(self, s => s.delete_all_push_tokens(family, user_id).await)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Migration versions (the number before `_`) of a backend's folder.
    fn versions(backend: &str) -> BTreeSet<String> {
        let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .map(|name| name.split('_').next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let sqlite = versions("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, versions("postgres"));
    }

    #[test]
    fn database_urls_select_their_backend() {
        use super::Backend;
        assert_eq!(Backend::of_url("sqlite://data/x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://u@h/db"), None);
    }
}
