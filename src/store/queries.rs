//! The queries both backends run, each written once as an ordinary function
//! over a connection of either database (`Queries::<Sqlite>` or
//! `Queries::<Postgres>`). SQL uses `$N` placeholders, which SQLite and
//! PostgreSQL both understand. A backend decides how a query runs (which
//! connection, which transaction, retries); the query itself lives here.
//!
//! Where the two dialects differ, [`Dialect`] names the difference, and its
//! two implementations stand side by side at the end of this file: the
//! verbs that store a row (SQLite's `OR REPLACE` deletes the row that
//! clashes on `UNIQUE (family, push_token)` in the same statement;
//! PostgreSQL deletes it with a statement of its own first) and the lock
//! that makes concurrent writes to one user's family queue (PostgreSQL's
//! advisory lock; SQLite runs every write on one connection anyway).

use std::marker::PhantomData;

use sqlx::postgres::PgQueryResult;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Postgres, Sqlite, Type};

use super::{
    ByFamily, Credentials, DeletedUser, EventRecord, Family, NewEvent, NewSession, NewUser,
    PurgedEvents, PushTokenRow, QueuedEvent, RecipientRow, Rotation, SessionUser, SocketClient,
    Stats, UserKey, UserSummary,
};

/// The `columns` (a literal) of the user whose username, else email, else
/// phone is `$1`: a login name's one rule, for logins and for notify.
macro_rules! user_by_login {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM users WHERE username = $1 \
             UNION ALL SELECT ",
            $columns,
            " FROM users WHERE email = $1 \
             UNION ALL SELECT ",
            $columns,
            " FROM users WHERE phone = $1 LIMIT 1"
        )
    };
}

/// Queue rows taken off in one statement (SQLite allows 32,766 arguments).
const UNQUEUE_CHUNK: usize = 500;

/// The columns of a stored push token, in [`PushTokenRow`]'s order.
pub(super) const ROW_COLUMNS: &str = "user_id, serial, push_token, language, dev, bundleid, \
     os, os_token, push_platform, phone_model, created_at, updated_at";

/// [`ROW_COLUMNS`] of `push_tokens p` in a LEFT JOIN, where they may be NULL.
const SESSION_ROW_COLUMNS: &str = "p.serial, p.push_token, p.language, p.dev, \
     p.bundleid, p.os, p.os_token, p.push_platform, p.phone_model, p.created_at, p.updated_at";

/// `DELETE {base}/{serial}`: arguments user id, family, serial.
pub(super) const DELETE_ONE: &str =
    "DELETE FROM push_tokens WHERE user_id = $1 AND family = $2 AND serial = $3";

/// `DELETE {base}`: arguments user id, family.
pub(super) const DELETE_FAMILY: &str = "DELETE FROM push_tokens WHERE user_id = $1 AND family = $2";

/// Updates the row at (user id `$10`, family `$11`, serial `$12`) with the
/// token `$1`, language `$2`, now `$9` and the optional fields `$3` to `$8`
/// (dev, bundleid, os, os_token, push_platform, phone_model; `NULL` keeps
/// the stored value), returning the row. `update` is the dialect's verb.
pub(super) fn update_row_sql(update: &str) -> String {
    update_sql(update, "serial = $12")
}

/// The same update of the row of user id `$10` and family `$11` that holds
/// the token `$1` already (there is one at most), whatever its serial.
pub(super) fn update_held_row_sql(update: &str) -> String {
    update_sql(update, "push_token = $1")
}

/// The update of [`update_row_sql`], of the caller's row for which `row`
/// holds.
fn update_sql(update: &str, row: &str) -> String {
    format!(
        "{update} push_tokens SET push_token = $1, language = $2, \
         dev = COALESCE($3, dev), bundleid = COALESCE($4, bundleid), \
         os = COALESCE($5, os), os_token = COALESCE($6, os_token), \
         push_platform = COALESCE($7, push_platform), \
         phone_model = COALESCE($8, phone_model), updated_at = $9 \
         WHERE user_id = $10 AND family = $11 AND {row} \
         RETURNING {ROW_COLUMNS}"
    )
}

/// The queries, for a database `DB` (`Sqlite` or `Postgres`). The bounds
/// say what the queries bind and read; both sqlx drivers meet them.
pub(super) struct Queries<DB>(PhantomData<DB>);

impl<DB> Queries<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> Credentials: FromRow<'r, DB::Row>,
    for<'r> UserSummary: FromRow<'r, DB::Row>,
    for<'r> SessionUser: FromRow<'r, DB::Row>,
    for<'r> PushTokenRow: FromRow<'r, DB::Row>,
    for<'r> SessionTokenRow: FromRow<'r, DB::Row>,
    for<'r> RecipientRow: FromRow<'r, DB::Row>,
    for<'r> QueuedEvent: FromRow<'r, DB::Row>,
    for<'r> EventRecord: FromRow<'r, DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    pub async fn ping(conn: &mut DB::Connection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(conn).await?;
        Ok(())
    }

    /// The new user's id, or the field whose value is taken.
    pub async fn insert_user(
        conn: &mut DB::Connection,
        user: &NewUser,
        now: i64,
    ) -> Result<Result<i64, &'static str>, sqlx::Error> {
        let inserted = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, email, phone, realm, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.email.as_deref())
        .bind(user.phone.as_deref())
        .bind(user.realm.as_deref())
        .bind(now)
        .fetch_one(&mut *conn)
        .await;
        match inserted {
            Ok(id) => Ok(Ok(id)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Ok(Err(Self::taken_field(conn, user).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// Which of a new user's unique values is already taken.
    async fn taken_field(
        conn: &mut DB::Connection,
        user: &NewUser,
    ) -> Result<&'static str, sqlx::Error> {
        let (username, email, phone): (bool, bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM users WHERE username = $1), \
                    EXISTS (SELECT 1 FROM users WHERE email = $2), \
                    EXISTS (SELECT 1 FROM users WHERE phone = $3)",
        )
        .bind(user.username.as_str())
        .bind(user.email.as_deref())
        .bind(user.phone.as_deref())
        .fetch_one(conn)
        .await?;
        Ok(if username || !(email || phone) {
            "username"
        } else if email {
            "email"
        } else {
            "phone"
        })
    }

    /// The account whose username, email or phone is `login`.
    pub async fn find_credentials(
        conn: &mut DB::Connection,
        login: &str,
    ) -> Result<Option<Credentials>, sqlx::Error> {
        sqlx::query_as(user_by_login!("id, password_hash"))
            .bind(login)
            .fetch_optional(conn)
            .await
    }

    pub async fn list_users(conn: &mut DB::Connection) -> Result<Vec<UserSummary>, sqlx::Error> {
        sqlx::query_as("SELECT id, username, email, phone, created_at FROM users ORDER BY id")
            .fetch_all(conn)
            .await
    }

    pub async fn insert_session(
        conn: &mut DB::Connection,
        session: &NewSession,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sessions (user_id, token_hash, refresh_hash, created_at, expires_at, \
             refresh_expires_at, login_id, login_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(session.user_id)
        .bind(session.token_hash.as_str())
        .bind(session.refresh_hash.as_str())
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(session.refresh_expires_at)
        .bind(session.login_id)
        .bind(session.login_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The user of the unexpired session whose token hashes to `token_hash`.
    pub async fn session_user(
        conn: &mut DB::Connection,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<SessionUser>, sqlx::Error> {
        sqlx::query_as(
            "SELECT s.id AS session_id, s.user_id, u.username, s.expires_at FROM sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(conn)
        .await
    }

    /// Revokes the session and deletes all of its user's push tokens (run
    /// in one transaction).
    pub async fn logout(
        conn: &mut DB::Connection,
        session_id: i64,
        user_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(session_id)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM push_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Swaps the session whose refresh key hashes to `refresh_hash` for
    /// `next` (run in one transaction): see `Database::rotate_session`.
    pub async fn rotate_session(
        conn: &mut DB::Connection,
        refresh_hash: &str,
        now: i64,
        next: &NewSession,
        max_age: i64,
    ) -> Result<Rotation, sqlx::Error> {
        let live: Option<(i64, i64, i64, i64)> = sqlx::query_as(
            "DELETE FROM sessions WHERE refresh_hash = $1 AND refresh_expires_at > $2 \
             RETURNING user_id, login_id, login_at, refresh_expires_at",
        )
        .bind(refresh_hash)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((user_id, login_id, login_at, refresh_expires_at)) = live else {
            return Self::refresh_key_reused(conn, refresh_hash, now).await;
        };
        sqlx::query(
            "INSERT INTO used_refresh_keys (refresh_hash, user_id, login_id, used_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(refresh_hash)
        .bind(user_id)
        .bind(login_id)
        .bind(now)
        .bind(refresh_expires_at)
        .execute(&mut *conn)
        .await?;
        let end = login_at.saturating_add(max_age);
        if end <= now {
            // The login is over: its last session goes, nothing replaces it.
            return Ok(Rotation::Unknown);
        }
        let session = NewSession {
            user_id,
            login_id,
            login_at,
            expires_at: next.expires_at.min(end),
            refresh_expires_at: next.refresh_expires_at.min(end),
            ..next.clone()
        };
        Self::insert_session(conn, &session).await?;
        Ok(Rotation::Rotated(session))
    }

    /// A refresh key no live session has: if it was used before, revokes
    /// the sessions of its login.
    async fn refresh_key_reused(
        conn: &mut DB::Connection,
        refresh_hash: &str,
        now: i64,
    ) -> Result<Rotation, sqlx::Error> {
        let used: Option<(i64, i64)> = sqlx::query_as(
            "SELECT user_id, login_id FROM used_refresh_keys \
             WHERE refresh_hash = $1 AND expires_at > $2",
        )
        .bind(refresh_hash)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((user_id, login_id)) = used else {
            return Ok(Rotation::Unknown);
        };
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND login_id = $2")
            .bind(user_id)
            .bind(login_id)
            .execute(conn)
            .await?;
        Ok(Rotation::Reused {
            user_id,
            revoked: DB::rows_affected(&done),
        })
    }

    /// Deletes sessions whose refresh key has expired (how many), and used
    /// refresh keys past their expiry.
    pub async fn purge_expired_sessions(
        conn: &mut DB::Connection,
        now: i64,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM sessions WHERE refresh_expires_at <= $1")
            .bind(now)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM used_refresh_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(conn)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// Sets the user's password hash and revokes their sessions but `keep`
    /// (run in one transaction); how many sessions went.
    pub async fn change_password(
        conn: &mut DB::Connection,
        user_id: i64,
        password_hash: &str,
        keep: Option<i64>,
    ) -> Result<u64, sqlx::Error> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(-1))
            .execute(conn)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// Revokes every session of the user; how many.
    pub async fn revoke_sessions(
        conn: &mut DB::Connection,
        user_id: i64,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(conn)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// Deletes the user, and with them (by the foreign keys) their
    /// sessions, push tokens, events and used refresh keys (run in one
    /// transaction).
    pub async fn delete_user(
        conn: &mut DB::Connection,
        user_id: i64,
    ) -> Result<Option<DeletedUser>, sqlx::Error> {
        let (sessions, push_tokens, events): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM sessions WHERE user_id = $1), \
             (SELECT COUNT(*) FROM push_tokens WHERE user_id = $1), \
             (SELECT COUNT(*) FROM events WHERE user_id = $1)",
        )
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(conn)
            .await?;
        Ok((DB::rows_affected(&done) > 0).then_some(DeletedUser {
            sessions,
            push_tokens,
            events,
        }))
    }

    /// The user's rows of `family`, ordered by serial.
    pub async fn push_tokens(
        conn: &mut DB::Connection,
        family: Family,
        user_id: i64,
    ) -> Result<Vec<PushTokenRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM push_tokens WHERE user_id = $1 AND family = $2 \
             ORDER BY serial"
        ))
        .bind(user_id)
        .bind(family.as_str())
        .fetch_all(conn)
        .await
    }

    /// The rows of the session's user, in one query: `None` when no
    /// unexpired session has that token hash.
    pub async fn session_push_tokens(
        conn: &mut DB::Connection,
        family: Family,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Vec<PushTokenRow>>, sqlx::Error> {
        let found: Vec<SessionTokenRow> = sqlx::query_as(&format!(
            "SELECT s.user_id AS owner, {SESSION_ROW_COLUMNS} FROM sessions s \
             LEFT JOIN push_tokens p ON p.user_id = s.user_id AND p.family = $2 \
             WHERE s.token_hash = $1 AND s.expires_at > $3 ORDER BY p.serial"
        ))
        .bind(token_hash)
        .bind(family.as_str())
        .bind(now)
        .fetch_all(conn)
        .await?;
        Ok(SessionTokenRow::collect(found))
    }

    /// `DELETE {base}/{serial}`: whether there was such a row.
    pub async fn delete_push_token(
        conn: &mut DB::Connection,
        family: Family,
        user_id: i64,
        serial: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(DELETE_ONE)
            .bind(user_id)
            .bind(family.as_str())
            .bind(serial)
            .execute(conn)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// `DELETE {base}`: how many rows there were.
    pub async fn delete_all_push_tokens(
        conn: &mut DB::Connection,
        family: Family,
        user_id: i64,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(DELETE_FAMILY)
            .bind(user_id)
            .bind(family.as_str())
            .execute(conn)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// Deletes at most `limit` push tokens last registered (created, or
    /// stored again by a PUT or POST) at or before `before`; how many of
    /// each family (`message`, `ring`; families with none omitted). The rows
    /// are picked by the `updated_at` index, so a batch costs its rows, not
    /// the table; on PostgreSQL a row a write holds right now is skipped
    /// (see [`Dialect::LOCK_STALE`]) and left to the next sweep.
    pub async fn delete_stale_push_tokens(
        conn: &mut DB::Connection,
        before: i64,
        limit: i64,
    ) -> Result<ByFamily, sqlx::Error> {
        let families: Vec<String> = sqlx::query_scalar(&format!(
            "DELETE FROM push_tokens WHERE (user_id, family, serial) IN \
             (SELECT user_id, family, serial FROM push_tokens WHERE updated_at <= $1 \
              LIMIT $2 {lock}) \
             RETURNING family",
            lock = DB::LOCK_STALE,
        ))
        .bind(before)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        let ring = families
            .iter()
            .filter(|f| *f == Family::Ring.as_str())
            .count() as u64;
        Ok(ByFamily {
            ring,
            message: families.len() as u64 - ring,
        })
    }

    /// How many push tokens each family holds (families with none omitted).
    pub async fn count_push_tokens(
        conn: &mut DB::Connection,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query_as("SELECT family, COUNT(*) FROM push_tokens GROUP BY family")
            .fetch_all(conn)
            .await
    }

    /// How many sessions have not expired.
    pub async fn count_active_sessions(
        conn: &mut DB::Connection,
        now: i64,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE expires_at > $1")
            .bind(now)
            .fetch_one(conn)
            .await
    }

    /// The counts of `pushtoken stats`, each a query of its own.
    pub async fn stats(conn: &mut DB::Connection, now: i64) -> Result<Stats, sqlx::Error> {
        let mut stats = Stats {
            users: Self::count_rows(&mut *conn, "SELECT COUNT(*) FROM users").await?,
            sessions: Self::count_active_sessions(&mut *conn, now).await?,
            socket_clients: Self::count_rows(&mut *conn, "SELECT COUNT(*) FROM socket_clients")
                .await?,
            events: Self::count_rows(&mut *conn, "SELECT COUNT(*) FROM events").await?,
            ..Stats::default()
        };
        let platforms: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT family, push_platform, COUNT(*) FROM push_tokens \
             GROUP BY family, push_platform",
        )
        .fetch_all(conn)
        .await?;
        for (family, platform, count) in platforms {
            let Some(family) = Family::ALL.into_iter().find(|f| f.as_str() == family) else {
                continue;
            };
            let tokens = stats.tokens.family_mut(family);
            tokens.total += count;
            tokens.platforms.insert(platform, count);
        }
        Ok(stats)
    }

    async fn count_rows(conn: &mut DB::Connection, sql: &'static str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(sql).fetch_one(conn).await
    }

    /// The secret `name`, stored as `candidate` unless one is stored.
    pub async fn server_secret(
        conn: &mut DB::Connection,
        name: &str,
        candidate: &str,
        now: i64,
    ) -> Result<String, sqlx::Error> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(conn)
            .await
    }

    pub async fn register_socket_client(
        conn: &mut DB::Connection,
        client: &SocketClient,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO socket_clients \
             (token, imei, imsi, type, brand, bundle_id, created_at, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (token) DO UPDATE SET imsi = excluded.imsi, type = excluded.type, \
             brand = excluded.brand, registered_at = excluded.registered_at",
        )
        .bind(client.token.as_str())
        .bind(client.imei.as_str())
        .bind(client.imsi.as_str())
        .bind(client.kind.as_str())
        .bind(client.brand.as_str())
        .bind(client.bundle_id.as_str())
        .bind(client.registered_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Whether user `id` exists.
    pub async fn password_hash(
        conn: &mut DB::Connection,
        id: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await
    }

    pub async fn user_exists(conn: &mut DB::Connection, id: i64) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(id)
            .fetch_one(conn)
            .await
    }

    /// The user's id and push tokens of `family`, ordered by serial: which
    /// the push socket issued, and the instance holding each one's
    /// connection. One row with the id alone when the user holds none; no
    /// row when there is no such user (a login name is looked up as
    /// `find_credentials` does, `user_by_login!`).
    pub async fn recipients(
        conn: &mut DB::Connection,
        user: UserKey<'_>,
        family: Family,
    ) -> Result<Vec<RecipientRow>, sqlx::Error> {
        macro_rules! tokens_of {
            ($users:expr) => {
                concat!(
                    "WITH u AS (",
                    $users,
                    ") SELECT u.id AS user_id, p.serial, p.push_token, \
                     s.token IS NOT NULL AS socket, c.instance AS held_by, p.dev, p.bundleid, \
                     p.os_token, p.push_platform \
                     FROM u LEFT JOIN push_tokens p ON p.user_id = u.id AND p.family = $2 \
                     LEFT JOIN socket_clients s ON s.token = p.push_token \
                     LEFT JOIN socket_connections c ON c.token = p.push_token \
                     ORDER BY p.serial"
                )
            };
        }
        let query = match user {
            UserKey::Id(id) => {
                sqlx::query_as(tokens_of!("SELECT id FROM users WHERE id = $1")).bind(id)
            }
            UserKey::Login(login) => sqlx::query_as(tokens_of!(user_by_login!("id"))).bind(login),
        };
        query.bind(family.as_str()).fetch_all(conn).await
    }

    /// Deletes the user's row at `serial` if it still holds both tokens.
    pub async fn prune_push_token(
        conn: &mut DB::Connection,
        family: Family,
        user_id: i64,
        serial: i64,
        push_token: &str,
        os_token: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM push_tokens WHERE user_id = $1 AND family = $2 AND serial = $3 \
             AND push_token = $4 AND os_token = $5",
        )
        .bind(user_id)
        .bind(family.as_str())
        .bind(serial)
        .bind(push_token)
        .bind(os_token)
        .execute(conn)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// Records the event and queues it for its tokens (run in one
    /// transaction); its id.
    pub async fn record_event(
        conn: &mut DB::Connection,
        event: &NewEvent,
    ) -> Result<i64, sqlx::Error> {
        let id = sqlx::query_scalar(
            "INSERT INTO events (user_id, family, type, uid, time, body, created_at, recorded_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(event.user_id)
        .bind(event.family.as_str())
        .bind(event.kind.as_str())
        .bind(event.uid.as_str())
        .bind(event.time)
        .bind(event.body.as_str())
        .bind(event.created_at)
        .bind(event.recorded_ms)
        .fetch_one(&mut *conn)
        .await?;
        for (token, expires_at) in &event.queue {
            sqlx::query(
                "INSERT INTO queued_events (token, event_id, expires_at) VALUES ($1, $2, $3)",
            )
            .bind(token.as_str())
            .bind(id)
            .bind(*expires_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(id)
    }

    /// Records that connection `holder` of `instance` holds `token` now
    /// (run in one transaction); the instance that held it before, if
    /// another.
    pub async fn hold_socket(
        conn: &mut DB::Connection,
        token: &str,
        instance: &str,
        holder: &str,
        now: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        let before: Option<String> =
            sqlx::query_scalar("SELECT instance FROM socket_connections WHERE token = $1")
                .bind(token)
                .fetch_optional(&mut *conn)
                .await?;
        sqlx::query(
            "INSERT INTO socket_connections (token, instance, holder, since) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (token) DO UPDATE SET instance = excluded.instance, \
             holder = excluded.holder, since = excluded.since",
        )
        .bind(token)
        .bind(instance)
        .bind(holder)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(before.filter(|before| before != instance))
    }

    /// Forgets that connection `holder` holds `token` (unless another
    /// connection, here or on another instance, has taken it since).
    pub async fn release_socket(
        conn: &mut DB::Connection,
        token: &str,
        holder: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM socket_connections WHERE token = $1 AND holder = $2")
            .bind(token)
            .bind(holder)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The events queued for `token` that have not expired and whose user
    /// still holds the token in the event's family, oldest first.
    pub async fn queued_events(
        conn: &mut DB::Connection,
        token: &str,
        now: i64,
    ) -> Result<Vec<QueuedEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT e.id, e.family, e.body, e.recorded_ms FROM queued_events q \
             JOIN events e ON e.id = q.event_id \
             WHERE q.token = $1 AND q.expires_at > $2 AND EXISTS (SELECT 1 FROM push_tokens p \
               WHERE p.family = e.family AND p.push_token = q.token AND p.user_id = e.user_id) \
             ORDER BY q.event_id",
        )
        .bind(token)
        .bind(now)
        .fetch_all(conn)
        .await
    }

    /// Takes the events `sent` off `token`'s queue, those and no other:
    /// an event with a smaller id may commit after a larger one was read
    /// (PostgreSQL hands ids out at insert), and stays queued for the next
    /// drain. What was not sent (expired, or its user no longer holds the
    /// token) stays until the sweep counts it expired.
    pub async fn unqueue_events(
        conn: &mut DB::Connection,
        token: &str,
        sent: &[i64],
    ) -> Result<(), sqlx::Error> {
        for ids in sent.chunks(UNQUEUE_CHUNK) {
            let placeholders: Vec<String> = (2..ids.len() + 2).map(|n| format!("${n}")).collect();
            let sql = format!(
                "DELETE FROM queued_events WHERE token = $1 AND event_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(token);
            for id in ids {
                query = query.bind(*id);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The user's recorded events (of one device `uid`, when given),
    /// newest first, `limit` of them after skipping `offset`.
    pub async fn events(
        conn: &mut DB::Connection,
        user_id: i64,
        uid: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, type AS kind, uid, time, body FROM events \
             WHERE user_id = $1 AND ($2 IS NULL OR uid = $2) \
             ORDER BY id DESC LIMIT $3 OFFSET $4",
        )
        .bind(user_id)
        .bind(uid)
        .bind(limit)
        .bind(offset)
        .fetch_all(conn)
        .await
    }

    /// Deletes queued deliveries that expired by `now` unsent, then events
    /// recorded before `before` (and what was queued of them); run in one
    /// transaction.
    pub async fn purge_events(
        conn: &mut DB::Connection,
        before: i64,
        now: i64,
    ) -> Result<PurgedEvents, sqlx::Error> {
        let expired = sqlx::query_as(
            "SELECT e.family, COUNT(*) FROM queued_events q JOIN events e ON e.id = q.event_id \
             WHERE q.expires_at <= $1 GROUP BY e.family ORDER BY e.family",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM queued_events WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *conn)
            .await?;
        let done = sqlx::query("DELETE FROM events WHERE created_at < $1")
            .bind(before)
            .execute(conn)
            .await?;
        Ok(PurgedEvents {
            events: DB::rows_affected(&done),
            expired,
        })
    }
}

/// One result row of a session joined to its user's push tokens: the token
/// columns are NULL when the user has none.
#[derive(sqlx::FromRow)]
pub(super) struct SessionTokenRow {
    owner: i64,
    serial: Option<i64>,
    push_token: Option<String>,
    language: Option<String>,
    dev: Option<i64>,
    bundleid: Option<String>,
    os: Option<String>,
    os_token: Option<String>,
    push_platform: Option<String>,
    phone_model: Option<String>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
}

impl SessionTokenRow {
    /// The push tokens of the result, or `None` when it has no row (no
    /// live session).
    fn collect(found: Vec<SessionTokenRow>) -> Option<Vec<PushTokenRow>> {
        if found.is_empty() {
            return None;
        }
        Some(found.into_iter().filter_map(SessionTokenRow::row).collect())
    }

    fn row(self) -> Option<PushTokenRow> {
        Some(PushTokenRow {
            user_id: self.owner,
            serial: self.serial?,
            push_token: self.push_token?,
            language: self.language?,
            dev: self.dev?,
            bundleid: self.bundleid?,
            os: self.os?,
            os_token: self.os_token?,
            push_platform: self.push_platform?,
            phone_model: self.phone_model?,
            created_at: self.created_at?,
            updated_at: self.updated_at?,
        })
    }
}

/// What differs between the two SQL dialects, for the queries above.
pub(super) trait Dialect: sqlx::Database {
    /// The verb that updates a push-token row.
    const UPDATE_ROW: &'static str;
    /// The verb that inserts a push-token row.
    const INSERT_ROW: &'static str;
    /// What follows the sub-select that picks the stale rows a sweep
    /// deletes: PostgreSQL locks them as it picks them, so that a row
    /// registered again meanwhile is judged by its new `updated_at` (and
    /// kept), and skips a row a write holds at that moment.
    const LOCK_STALE: &'static str;

    /// Rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

impl Dialect for Sqlite {
    /// `OR REPLACE`: a row clashing on `UNIQUE (family, push_token)` is
    /// deleted by the statement that stores the token (no trigger or
    /// foreign key refers to `push_tokens`, so nothing else is touched).
    const UPDATE_ROW: &'static str = "UPDATE OR REPLACE";
    const INSERT_ROW: &'static str = "INSERT OR REPLACE";
    /// Nothing: the sweep is a write like any other, on the one write
    /// connection.
    const LOCK_STALE: &'static str = "";

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// The advisory lock key of a user's family on PostgreSQL: `user_id * 2 +
/// family`, distinct for every user id below 2^62.
pub(super) fn lock_key(family: Family, user_id: i64) -> i64 {
    let family = match family {
        Family::Ring => 0,
        Family::Message => 1,
    };
    user_id.wrapping_mul(2).wrapping_add(family)
}

impl Dialect for Postgres {
    const UPDATE_ROW: &'static str = "UPDATE";
    const INSERT_ROW: &'static str = "INSERT";
    const LOCK_STALE: &'static str = "FOR UPDATE SKIP LOCKED";

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}
