//! Storage: one `Store` for the whole server, with one backend per database.
//!
//! Handlers only see `Store` and its plain data types; which database is
//! behind it is decided once, from the `DATABASE_URL` scheme.

mod cache;
mod postgres;
mod queries;
mod readers;
mod sqlite;
mod transfer;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::Serialize;

use cache::Cache;
pub use cache::{CacheOptions, Change, Rows, LOOKUPS as CACHE_LOOKUPS};
pub use postgres::PgStore;
pub use sqlite::{missing_sqlite_file, SqliteStore};
pub use transfer::{Imported, HEADER as EXPORT_HEADER};

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

/// A count of push tokens of each family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByFamily {
    pub ring: u64,
    pub message: u64,
}

impl ByFamily {
    pub fn of(&self, family: Family) -> u64 {
        match family {
            Family::Ring => self.ring,
            Family::Message => self.message,
        }
    }

    pub fn total(&self) -> u64 {
        self.ring + self.message
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

/// A new session: the hashes of its token and refresh key, its expiries,
/// and the password login it descends from.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub user_id: i64,
    pub token_hash: String,
    pub refresh_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub refresh_expires_at: i64,
    /// Shared by every session rotated from the same password login.
    pub login_id: i64,
    /// When that login was (unix seconds).
    pub login_at: i64,
}

/// What a refresh key did.
#[derive(Debug)]
pub enum Rotation {
    /// It was live: its session is replaced by this one.
    Rotated(NewSession),
    /// It was used before: the sessions of its login are revoked.
    Reused { user_id: i64, revoked: u64 },
    /// No live session has it, and it was never used.
    Unknown,
}

/// What deleting a user removed with it.
#[derive(Debug, PartialEq, Eq)]
pub struct DeletedUser {
    pub sessions: i64,
    pub push_tokens: i64,
    pub events: i64,
}

/// The user behind a live session.
#[derive(sqlx::FromRow, Clone, Debug)]
pub struct SessionUser {
    pub session_id: i64,
    pub user_id: i64,
    pub username: String,
    /// When the session expires (unix seconds).
    pub expires_at: i64,
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

/// A client of the push socket, as it registered.
#[derive(Clone, Debug)]
pub struct SocketClient {
    /// The token the socket issued it.
    pub token: String,
    pub imei: String,
    pub imsi: String,
    /// The register's `type`.
    pub kind: String,
    pub brand: String,
    pub bundle_id: String,
    pub registered_at: i64,
}

/// An event to record, and the push-socket tokens to queue it for.
pub struct NewEvent {
    pub user_id: i64,
    pub family: Family,
    /// The event's `type`.
    pub kind: String,
    pub uid: String,
    /// The event's own time, else when it was recorded (unix seconds).
    pub time: i64,
    /// The event as sent, a JSON object (with its `time`).
    pub body: String,
    pub created_at: i64,
    /// When it was recorded, in unix milliseconds.
    pub recorded_ms: i64,
    /// Each token to queue it for, with when it expires there.
    pub queue: Vec<(String, i64)>,
}

/// Whom an event is for: a user's id, or a login name (username, email or
/// phone).
#[derive(Clone, Copy, Debug)]
pub enum UserKey<'a> {
    Id(i64),
    Login(&'a str),
}

/// A user's push tokens of a family, as delivery sees them: the row of
/// each, or the user alone (every column `NULL` but the id) when they hold
/// none.
#[derive(sqlx::FromRow)]
pub struct RecipientRow {
    pub user_id: i64,
    pub serial: Option<i64>,
    pub push_token: Option<String>,
    pub socket: bool,
    pub held_by: Option<String>,
    pub dev: Option<i64>,
    pub bundleid: Option<String>,
    pub os_token: Option<String>,
    pub push_platform: Option<String>,
}

/// The user's id and their recipients from the rows of one
/// [`RecipientRow`] read; `None` when it found no user.
pub fn recipients_of(rows: Vec<RecipientRow>) -> Option<(i64, Vec<Recipient>)> {
    let user_id = rows.first()?.user_id;
    let recipients = rows
        .into_iter()
        .filter_map(|row| {
            Some(Recipient {
                serial: row.serial?,
                push_token: row.push_token?,
                socket: row.socket,
                held_by: row.held_by,
                dev: row.dev.unwrap_or_default(),
                bundleid: row.bundleid.unwrap_or_default(),
                os_token: row.os_token.unwrap_or_default(),
                push_platform: row.push_platform.unwrap_or_default(),
            })
        })
        .collect();
    Some((user_id, recipients))
}

/// A push token of a user, as delivery sees it.
#[derive(Clone)]
pub struct Recipient {
    pub serial: i64,
    pub push_token: String,
    /// Whether the push socket issued it.
    pub socket: bool,
    /// The instance holding its connection now, if one does.
    pub held_by: Option<String>,
    /// 0: APNs production, 1: sandbox.
    pub dev: i64,
    pub bundleid: String,
    pub os_token: String,
    pub push_platform: String,
}

/// An event queued for a push-socket connection.
#[derive(sqlx::FromRow, Debug)]
pub struct QueuedEvent {
    pub id: i64,
    pub family: String,
    /// The event as recorded (a JSON object).
    pub body: String,
    /// When it was recorded, in unix milliseconds (0: not known).
    pub recorded_ms: i64,
}

/// What a sweep of old events removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PurgedEvents {
    /// Events past their retention.
    pub events: u64,
    /// Queued deliveries whose ttl ran out unsent, by family (`ring`,
    /// `message`).
    pub expired: Vec<(String, i64)>,
}

/// A recorded event, for the history routes.
#[derive(sqlx::FromRow, Debug)]
pub struct EventRecord {
    pub id: i64,
    pub kind: String,
    pub uid: String,
    pub time: i64,
    /// The event as recorded (a JSON object).
    pub body: String,
}

/// Whether a write created a row or updated one.
#[derive(Debug)]
pub enum Written {
    Created(PushTokenRow),
    Updated(PushTokenRow),
}

/// What the database holds, as `pushtoken stats` shows it.
#[derive(Serialize, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub users: i64,
    /// Sessions that have not expired.
    pub sessions: i64,
    pub tokens: TokenStats,
    pub socket_clients: i64,
    pub events: i64,
}

/// The push tokens of each family.
#[derive(Serialize, Debug, Default, PartialEq, Eq)]
pub struct TokenStats {
    pub ring: FamilyStats,
    pub message: FamilyStats,
}

impl TokenStats {
    pub fn family_mut(&mut self, family: Family) -> &mut FamilyStats {
        match family {
            Family::Ring => &mut self.ring,
            Family::Message => &mut self.message,
        }
    }
}

/// The push tokens of one family: how many, and how many of each
/// `push_platform` (as stored).
#[derive(Serialize, Debug, Default, PartialEq, Eq)]
pub struct FamilyStats {
    pub total: i64,
    pub platforms: std::collections::BTreeMap<String, i64>,
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

/// Everything the server asks of its database, one method per query: the
/// store's contract. Each backend implements all of it (`sqlite.rs`,
/// `postgres.rs`), mostly by running the shared queries of `queries.rs` on
/// its own connections; the compiler holds both to every method.
#[async_trait]
pub trait Database: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Applies the embedded migrations that are not applied yet.
    async fn migrate(&self) -> anyhow::Result<()>;

    /// Finishes the writes under way and closes every connection.
    async fn close(&self);

    fn pool_stats(&self) -> PoolStats;

    /// Whether other server instances may share the database (and so hear
    /// [`Database::signal`]).
    fn shared(&self) -> bool {
        false
    }

    /// SQLite: write transactions committed since start, and the writes
    /// they held (their ratio is the mean batch). `None` on PostgreSQL,
    /// where each write commits on its own.
    fn write_batches(&self) -> Option<(u64, u64)> {
        None
    }

    async fn ping(&self) -> StoreResult<()>;

    /// Creates an account: its id, or [`StoreError::Conflict`] naming the
    /// unique value (`username`, `email`, `phone`) that is taken.
    async fn create_user(&self, user: NewUser, now: i64) -> StoreResult<i64>;

    /// The account whose username, email or phone is `login`.
    async fn find_credentials(&self, login: &str) -> StoreResult<Option<Credentials>>;

    async fn list_users(&self) -> StoreResult<Vec<UserSummary>>;

    async fn create_session(&self, session: NewSession) -> StoreResult<()>;

    /// The user of the unexpired session whose token hashes to `token_hash`.
    async fn session_user(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionUser>>;

    /// Revokes a session and deletes all of its user's push tokens, at once.
    async fn logout(&self, session: &SessionUser) -> StoreResult<()>;

    /// Swaps the session whose refresh key hashes to `refresh_hash` for
    /// `next`, whose user and login are filled in and whose expiries are
    /// cut to `max_age` seconds after the login; the key is kept as used.
    /// A used key revokes every session of its login instead.
    async fn rotate_session(
        &self,
        refresh_hash: &str,
        now: i64,
        next: NewSession,
        max_age: i64,
    ) -> StoreResult<Rotation>;

    /// Deletes sessions whose refresh key has expired, and used refresh
    /// keys past their expiry; returns how many sessions.
    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64>;

    /// Sets the user's password hash and revokes their sessions but
    /// `keep`, at once; how many sessions were revoked.
    async fn change_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep: Option<i64>,
    ) -> StoreResult<u64>;

    /// Revokes every session of the user; how many.
    async fn revoke_sessions(&self, user_id: i64) -> StoreResult<u64>;

    /// Deletes the user with their sessions, push tokens and events; what
    /// went with them, `None` when there is no such user.
    async fn delete_user(&self, user_id: i64) -> StoreResult<Option<DeletedUser>>;

    /// The user's push tokens of `family`, ordered by serial.
    async fn push_tokens(&self, family: Family, user_id: i64) -> StoreResult<Vec<PushTokenRow>>;

    /// The push tokens of the user of the unexpired session whose token
    /// hashes to `token_hash`, looked up together; `None` without such a
    /// session.
    async fn session_push_tokens(
        &self,
        family: Family,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Vec<PushTokenRow>>>;

    /// `PUT {base}/{serial}`: creates or updates the row at `serial`.
    async fn put_push_token(&self, write: PushTokenWrite, serial: i64) -> StoreResult<Written>;

    /// `POST {base}`: updates the caller's row holding the token, or creates
    /// one at the next serial (`Conflict("serial")` when none is left).
    async fn post_push_token(&self, write: PushTokenWrite) -> StoreResult<Written>;

    /// `DELETE {base}/{serial}`: whether the caller had such a row.
    async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool>;

    /// Deletes the user's row at `serial` if it still holds `push_token`
    /// and `os_token` (a provider's verdict that they are dead): whether it
    /// did.
    async fn prune_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
        push_token: &str,
        os_token: &str,
    ) -> StoreResult<bool>;

    /// `DELETE {base}`: how many of the caller's rows there were.
    async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64>;

    /// Deletes at most `limit` push tokens last registered (created, or
    /// stored again by a PUT or POST) at or before `before` (unix seconds):
    /// one batch of the stale-token sweep. How many of each family.
    async fn delete_stale_push_tokens(&self, before: i64, limit: i64) -> StoreResult<ByFamily>;

    /// How many push tokens each family holds (families with none omitted).
    async fn count_push_tokens(&self) -> StoreResult<Vec<(String, i64)>>;

    /// How many sessions have not expired.
    async fn count_active_sessions(&self, now: i64) -> StoreResult<i64>;

    /// How many users, live sessions (as of `now`), push tokens (by family
    /// and platform), push-socket clients and events there are.
    async fn stats(&self, now: i64) -> StoreResult<Stats>;

    /// Writes every stored record to `out` in the export format
    /// (`transfer.rs`), all from one snapshot; how many records.
    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<u64>;

    /// Stores the export read from `input`, in one transaction: refused,
    /// with nothing written, when the database holds records already (a
    /// secret made by a first start aside, which the export's replaces) or
    /// when any line of the input is not a record of the format.
    async fn import(
        &self,
        input: &mut (dyn tokio::io::AsyncBufRead + Send + Unpin),
    ) -> anyhow::Result<Imported>;

    /// The server's secret `name`: the stored one, else `candidate`, stored
    /// now (the first instance to store one wins; every instance then uses
    /// it).
    async fn server_secret(&self, name: &str, candidate: &str, now: i64) -> StoreResult<String>;

    /// Records a push-socket client's registration (created, or updated
    /// with what it sent this time).
    async fn register_socket_client(&self, client: &SocketClient) -> StoreResult<()>;

    async fn user_exists(&self, id: i64) -> StoreResult<bool>;

    /// The user's password hash, `None` when there is no such user.
    async fn password_hash(&self, id: i64) -> StoreResult<Option<String>>;

    /// The user's id and their push tokens of `family`, ordered by serial,
    /// with which the push socket issued and which connections are held
    /// (by whom), in one read; `None` when there is no such user.
    async fn recipients(
        &self,
        user: UserKey<'_>,
        family: Family,
    ) -> StoreResult<Option<(i64, Vec<Recipient>)>>;

    /// Records an event and queues it for its tokens, at once; its id.
    async fn record_event(&self, event: NewEvent) -> StoreResult<i64>;

    /// Records that connection `holder` of `instance` holds `token`; the
    /// instance that held it before, if another.
    async fn hold_socket(
        &self,
        token: &str,
        instance: &str,
        holder: &str,
        now: i64,
    ) -> StoreResult<Option<String>>;

    /// Forgets that connection `holder` holds `token`, unless another has
    /// taken it since.
    async fn release_socket(&self, token: &str, holder: &str) -> StoreResult<()>;

    /// The live events queued for `token` whose user still holds it,
    /// oldest first.
    async fn queued_events(&self, token: &str, now: i64) -> StoreResult<Vec<QueuedEvent>>;

    /// Takes the events `sent` off `token`'s queue.
    async fn unqueue_events(&self, token: &str, sent: Vec<i64>) -> StoreResult<()>;

    /// The user's events (of device `uid`, when given), newest first.
    async fn events(
        &self,
        user_id: i64,
        uid: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>>;

    /// Deletes queued deliveries that expired by `now` unsent, and events
    /// recorded before `before`.
    async fn purge_events(&self, before: i64, now: i64) -> StoreResult<PurgedEvents>;

    /// Sends `message` on `channel` to every server instance on this
    /// database, this one included (PostgreSQL's `NOTIFY`). Nothing on
    /// SQLite: one process is its only instance.
    async fn signal(&self, channel: Channel, message: &str) -> StoreResult<()>;

    /// The messages [`Database::signal`] sends on `channel`, as they come;
    /// `None` on a database with one instance only. An item `None` says
    /// some may have been lost (the listening connection was made again).
    async fn signals(
        &self,
        channel: Channel,
    ) -> StoreResult<Option<BoxStream<'static, Option<String>>>>;
}

/// What the instances sharing a database tell each other of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Events to deliver and connections to close (`push/delivery.rs`).
    Deliveries,
    /// Changes that cached answers must not outlive (`cache.rs`).
    Cache,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Deliveries => "pushtoken",
            Channel::Cache => "pushtoken_cache",
        }
    }
}

/// The server's database, whichever backend is behind it: every method of
/// [`Database`] is called through it. Cheap to clone.
///
/// What it caches (`cache.rs`) it reads through its own methods below,
/// and every write that could change a cached answer goes through a method
/// below too, which records the change once the write is done: a new
/// method of [`Database`] that writes sessions or push tokens needs one.
#[derive(Clone, Debug)]
pub struct Store {
    database: Arc<dyn Database>,
    cache: Arc<Cache>,
}

impl Store {
    /// Opens the database named by `url` (`sqlite:…` or `postgres://…`).
    pub async fn connect(
        url: &str,
        options: &PoolOptions,
        cache: &CacheOptions,
    ) -> anyhow::Result<Self> {
        let database: Arc<dyn Database> = match Backend::of_url(url) {
            Some(Backend::Sqlite) => Arc::new(SqliteStore::connect(url, options).await?),
            Some(Backend::Postgres) => Arc::new(PgStore::connect(url, options).await?),
            None => {
                anyhow::bail!("unsupported DATABASE_URL scheme (expected sqlite: or postgres://)")
            }
        };
        let shared = database.shared().then(|| database.clone());
        let cache = Arc::new(Cache::new(cache, shared));
        Ok(Store { database, cache })
    }

    /// Applies the other instances' changes to this one's cache, until
    /// the store is closed.
    pub fn hear_others(&self) {
        tokio::spawn(self.cache.clone().hear_others(self.database.clone()));
    }

    /// Tells the other instances of the last changes, then closes.
    pub async fn close(&self) {
        self.cache.flush(Duration::from_secs(5)).await;
        self.database.close().await;
    }

    /// Runs `write`, then records `changes`, whether or not it succeeded
    /// (a write that failed may have landed all the same).
    async fn changing<T>(
        &self,
        changes: &[Change],
        write: impl std::future::Future<Output = T>,
    ) -> T {
        let done = write.await;
        self.cache.changed(changes);
        done
    }

    pub async fn session_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<SessionUser>> {
        let load = self.database.session_user(token_hash, now);
        self.cache.session(token_hash, now, load).await
    }

    /// The rows of the session's user: `None` without such a session.
    pub async fn session_push_tokens(
        &self,
        family: Family,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<Rows>> {
        if !self.cache.enabled() {
            let rows = self.database.session_push_tokens(family, token_hash, now);
            return Ok(rows.await?.map(Rows::from));
        }
        let Some(user) = self.session_user(token_hash, now).await? else {
            return Ok(None);
        };
        let load = self.database.push_tokens(family, user.user_id);
        self.cache.rows(user.user_id, family, load).await.map(Some)
    }

    pub async fn logout(&self, session: &SessionUser) -> StoreResult<()> {
        let user = session.user_id;
        let changes = [Change::sessions_of(user), Change::rows_of(user)];
        self.changing(&changes, self.database.logout(session)).await
    }

    pub async fn rotate_session(
        &self,
        refresh_hash: &str,
        now: i64,
        next: NewSession,
        max_age: i64,
    ) -> StoreResult<Rotation> {
        let rotation = self
            .database
            .rotate_session(refresh_hash, now, next, max_age)
            .await?;
        match &rotation {
            Rotation::Rotated(NewSession { user_id, .. }) | Rotation::Reused { user_id, .. } => {
                self.cache.changed(&[Change::sessions_of(*user_id)])
            }
            Rotation::Unknown => {}
        }
        Ok(rotation)
    }

    pub async fn change_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep: Option<i64>,
    ) -> StoreResult<u64> {
        let write = self.database.change_password(user_id, password_hash, keep);
        self.changing(&[Change::sessions_of(user_id)], write).await
    }

    pub async fn revoke_sessions(&self, user_id: i64) -> StoreResult<u64> {
        let write = self.database.revoke_sessions(user_id);
        self.changing(&[Change::sessions_of(user_id)], write).await
    }

    pub async fn delete_user(&self, user_id: i64) -> StoreResult<Option<DeletedUser>> {
        let changes = [Change::sessions_of(user_id), Change::rows_of(user_id)];
        self.changing(&changes, self.database.delete_user(user_id))
            .await
    }

    pub async fn put_push_token(&self, write: PushTokenWrite, serial: i64) -> StoreResult<Written> {
        let changes = Self::registered(&write);
        self.changing(&changes, self.database.put_push_token(write, serial))
            .await
    }

    pub async fn post_push_token(&self, write: PushTokenWrite) -> StoreResult<Written> {
        let changes = Self::registered(&write);
        self.changing(&changes, self.database.post_push_token(write))
            .await
    }

    /// What a `PUT` or `POST` may change: the writer's rows, and the row of
    /// whoever held the token before.
    fn registered(write: &PushTokenWrite) -> [Change; 2] {
        [
            Change::rows_of(write.user_id),
            Change::token(write.family, &write.input.push_token),
        ]
    }

    pub async fn delete_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> StoreResult<bool> {
        let write = self.database.delete_push_token(family, user_id, serial);
        self.changing(&[Change::rows_of(user_id)], write).await
    }

    pub async fn prune_push_token(
        &self,
        family: Family,
        user_id: i64,
        serial: i64,
        push_token: &str,
        os_token: &str,
    ) -> StoreResult<bool> {
        let write = self
            .database
            .prune_push_token(family, user_id, serial, push_token, os_token);
        self.changing(&[Change::rows_of(user_id)], write).await
    }

    pub async fn delete_all_push_tokens(&self, family: Family, user_id: i64) -> StoreResult<u64> {
        let write = self.database.delete_all_push_tokens(family, user_id);
        self.changing(&[Change::rows_of(user_id)], write).await
    }

    pub async fn delete_stale_push_tokens(&self, before: i64, limit: i64) -> StoreResult<ByFamily> {
        let done = self.database.delete_stale_push_tokens(before, limit).await;
        if !matches!(&done, Ok(deleted) if deleted.total() == 0) {
            self.cache.changed(&[Change::All]);
        }
        done
    }

    pub async fn import(
        &self,
        input: &mut (dyn tokio::io::AsyncBufRead + Send + Unpin),
    ) -> anyhow::Result<Imported> {
        self.changing(&[Change::All], self.database.import(input))
            .await
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Database;

    fn deref(&self) -> &Self::Target {
        &*self.database
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
