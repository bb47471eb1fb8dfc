//! The queries both backends run, written once. SQL uses `$N` placeholders,
//! which SQLite and PostgreSQL both understand; `queries!(Db)` expands to the
//! methods of a backend that has `reader()` (a connection for reads) and
//! `write`/`write_one` (see below).
//!
//! Where the two dialects differ, a backend names its words: the verbs that
//! store a row (`UPDATE_ROW`, `INSERT_ROW`) and whether they take the push
//! token from the row holding it (`REPLACES_TOKEN_HOLDER`: SQLite's `OR
//! REPLACE` deletes the row that clashes on `UNIQUE (family, push_token)`
//! in the same statement; PostgreSQL runs a DELETE first).
//!
//! Each write here is a function of a connection, handed to the backend's
//! `write` (a transaction) or `write_one` (a single statement). On SQLite
//! both queue the function for the one writer, which commits the writes
//! that queued together in one transaction (`writer.rs`); the writes most
//! often made there (`PUT`, the deletes) are written as fixed statements in
//! `sqlite.rs` instead, which the writer runs many at a time. On
//! PostgreSQL each runs on a pooled connection; a transaction that lost a
//! race to a concurrent one (a unique violation, a deadlock, a row gone
//! under it) is retried whole (after a short random pause), so the
//! database's constraints alone keep "one phone token, one row" and unique
//! serials, across any number of server instances. Writes to one user's
//! family also take a per-(user, family) lock where the backend has one
//! (`lock_family`), so concurrent POSTs choosing the next serial queue
//! instead of colliding.

/// Attempts of a write transaction before its error is returned.
pub(super) const WRITE_ATTEMPTS: u32 = 20;

/// A short random pause before attempt `attempt` of a write, so writers that
/// collided do not collide again in lockstep.
pub(super) async fn backoff(attempt: u32) {
    use rand::Rng;
    let most = 1u64 << attempt.min(6);
    let millis = rand::thread_rng().gen_range(0..=most);
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

/// Whether a failed write transaction should be run again.
pub(super) fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::RowNotFound => true,
        sqlx::Error::Database(e) => {
            e.is_unique_violation() || matches!(e.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

pub(super) const ROW_COLUMNS: &str = "user_id, serial, push_token, language, dev, bundleid, \
     os, os_token, push_platform, phone_model, created_at, updated_at";

/// `DELETE {base}/{serial}`: arguments user id, family, serial.
pub(super) const DELETE_ONE: &str =
    "DELETE FROM push_tokens WHERE user_id = $1 AND family = $2 AND serial = $3";
/// `DELETE {base}`: arguments user id, family.
pub(super) const DELETE_FAMILY: &str = "DELETE FROM push_tokens WHERE user_id = $1 AND family = $2";

/// [`ROW_COLUMNS`] of `push_tokens p` in a LEFT JOIN, where they may be NULL.
pub(super) const SESSION_ROW_COLUMNS: &str = "p.serial, p.push_token, p.language, p.dev, \
     p.bundleid, p.os, p.os_token, p.push_platform, p.phone_model, p.created_at, p.updated_at";

/// Updates the row at (user id `$10`, family `$11`, serial `$12`) with the
/// token `$1`, language `$2`, now `$9` and the optional fields `$3` to `$8`
/// (dev, bundleid, os, os_token, push_platform, phone_model; `NULL` keeps
/// the stored value), returning the row. `update` is the backend's verb.
pub(super) fn update_row_sql(update: &str) -> String {
    format!(
        "{update} push_tokens SET push_token = $1, language = $2, \
         dev = COALESCE($3, dev), bundleid = COALESCE($4, bundleid), \
         os = COALESCE($5, os), os_token = COALESCE($6, os_token), \
         push_platform = COALESCE($7, push_platform), \
         phone_model = COALESCE($8, phone_model), updated_at = $9 \
         WHERE user_id = $10 AND family = $11 AND serial = $12 \
         RETURNING {ROW_COLUMNS}"
    )
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
    pub(super) fn collect(found: Vec<SessionTokenRow>) -> Option<Vec<super::PushTokenRow>> {
        if found.is_empty() {
            return None;
        }
        Some(found.into_iter().filter_map(SessionTokenRow::row).collect())
    }

    fn row(self) -> Option<super::PushTokenRow> {
        Some(super::PushTokenRow {
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

/// A write function for a backend's `write`: `job!(conn, a, b => body)`
/// clones the shared arguments `a` and `b` (`Arc`s or copies) into each run
/// of `body`, which may use `conn`.
macro_rules! job {
    ($conn:ident $(, $arg:ident)* => $body:expr) => {
        move |$conn| {
            $(let $arg = $arg.clone();)*
            Box::pin(async move { $body })
        }
    };
}

macro_rules! queries {
    ($db:ty) => {
        pub async fn ping(&self) -> StoreResult<()> {
            sqlx::query("SELECT 1").execute(&mut *self.reader().await?).await?;
            Ok(())
        }

        pub async fn create_user(&self, user: NewUser, now: i64) -> StoreResult<i64> {
            let user = Arc::new(user);
            self.write_one(job!(conn, user => Self::insert_user(conn, &user, now).await))
                .await?
                .map_err(StoreError::Conflict)
        }

        /// The new user's id, or the field whose value is taken.
        async fn insert_user(
            conn: &mut <$db as sqlx::Database>::Connection,
            user: &NewUser,
            now: i64,
        ) -> Result<Result<i64, &'static str>, sqlx::Error> {
            let inserted = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash, email, phone, realm, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(&user.email)
            .bind(&user.phone)
            .bind(&user.realm)
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
            conn: &mut <$db as sqlx::Database>::Connection,
            user: &NewUser,
        ) -> Result<&'static str, sqlx::Error> {
            let (username, email, phone): (bool, bool, bool) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM users WHERE username = $1), \
                        EXISTS (SELECT 1 FROM users WHERE email = $2), \
                        EXISTS (SELECT 1 FROM users WHERE phone = $3)",
            )
            .bind(&user.username)
            .bind(&user.email)
            .bind(&user.phone)
            .fetch_one(&mut *conn)
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
                "SELECT id, password_hash FROM users WHERE username = $1 \
                 UNION ALL SELECT id, password_hash FROM users WHERE email = $1 \
                 UNION ALL SELECT id, password_hash FROM users WHERE phone = $1 LIMIT 1",
            )
            .bind(login)
            .fetch_optional(&mut *self.reader().await?)
            .await?)
        }

        pub async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
            Ok(sqlx::query_as(
                "SELECT id, username, email, phone, created_at FROM users ORDER BY id",
            )
            .fetch_all(&mut *self.reader().await?)
            .await?)
        }

        pub async fn create_session(&self, session: NewSession) -> StoreResult<()> {
            let session = Arc::new(session);
            Ok(self
                .write_one(job!(conn, session => Self::insert_session(conn, &session).await))
                .await?)
        }

        async fn insert_session(
            conn: &mut <$db as sqlx::Database>::Connection,
            session: &NewSession,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO sessions \
                 (user_id, token_hash, refresh_hash, created_at, expires_at, refresh_expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(session.user_id)
            .bind(&session.token_hash)
            .bind(&session.refresh_hash)
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(session.refresh_expires_at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        pub async fn session_user(
            &self,
            token_hash: &str,
            now: i64,
        ) -> StoreResult<Option<SessionUser>> {
            Ok(sqlx::query_as(
                "SELECT s.id AS session_id, s.user_id, u.username FROM sessions s \
                 JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&mut *self.reader().await?)
            .await?)
        }

        pub async fn logout(&self, session: &SessionUser) -> StoreResult<()> {
            let (session_id, user_id) = (session.session_id, session.user_id);
            Ok(self
                .write(job!(conn => {
                    sqlx::query("DELETE FROM sessions WHERE id = $1")
                        .bind(session_id)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("DELETE FROM push_tokens WHERE user_id = $1")
                        .bind(user_id)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }))
                .await?)
        }

        pub async fn rotate_session(
            &self,
            refresh_hash: &str,
            now: i64,
            next: NewSession,
        ) -> StoreResult<Option<NewSession>> {
            let refresh_hash: Arc<str> = refresh_hash.into();
            let next = Arc::new(next);
            Ok(self
                .write(job!(conn, refresh_hash, next => {
                    let user_id: Option<i64> = sqlx::query_scalar(
                        "DELETE FROM sessions WHERE refresh_hash = $1 \
                         AND refresh_expires_at > $2 RETURNING user_id",
                    )
                    .bind(&*refresh_hash)
                    .bind(now)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(user_id) = user_id else {
                        return Ok(None);
                    };
                    let session = NewSession { user_id, ..NewSession::clone(&next) };
                    Self::insert_session(conn, &session).await?;
                    Ok(Some(session))
                }))
                .await?)
        }

        pub async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
            Ok(self
                .write_one(job!(conn => {
                    Ok(sqlx::query("DELETE FROM sessions WHERE refresh_expires_at <= $1")
                        .bind(now)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected())
                }))
                .await?)
        }

        /// The rows of the session's user, in one query: `None` when no
        /// unexpired session has that token hash.
        pub async fn session_push_tokens(
            &self,
            family: Family,
            token_hash: &str,
            now: i64,
        ) -> StoreResult<Option<Vec<PushTokenRow>>> {
            let found: Vec<SessionTokenRow> = sqlx::query_as(&format!(
                "SELECT s.user_id AS owner, {SESSION_ROW_COLUMNS} FROM sessions s \
                 LEFT JOIN push_tokens p ON p.user_id = s.user_id AND p.family = $2 \
                 WHERE s.token_hash = $1 AND s.expires_at > $3 ORDER BY p.serial"
            ))
            .bind(token_hash)
            .bind(family.as_str())
            .bind(now)
            .fetch_all(&mut *self.reader().await?)
            .await?;
            Ok(SessionTokenRow::collect(found))
        }

        pub async fn post_push_token(&self, write: PushTokenWrite) -> StoreResult<Written> {
            let write = Arc::new(write);
            self.write(job!(conn, write => Self::post_row(conn, &write).await))
                .await?
                .ok_or(StoreError::Conflict("serial"))
        }

        /// `None`, with nothing written, when the token is new to the
        /// caller and every serial up to the largest int64 is taken.
        async fn post_row(
            conn: &mut <$db as sqlx::Database>::Connection,
            write: &PushTokenWrite,
        ) -> Result<Option<Written>, sqlx::Error> {
            Self::lock_family(conn, write.family, write.user_id).await?;
            // The caller's row holding the token, and the caller's highest
            // serial (the DELETE below touches only other users' rows).
            let (held, highest): (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT serial FROM push_tokens \
                         WHERE family = $1 AND push_token = $2 AND user_id = $3), \
                        (SELECT MAX(serial) FROM push_tokens \
                         WHERE user_id = $3 AND family = $1)",
            )
            .bind(write.family.as_str())
            .bind(&write.input.push_token)
            .bind(write.user_id)
            .fetch_one(&mut *conn)
            .await?;
            // (serial, whether the caller's row there is updated)
            let (serial, update) = match (held, highest) {
                (Some(serial), _) => (serial, true),
                (None, None) => (1, false),
                (None, Some(n)) => match n.checked_add(1) {
                    Some(next) => (next, false),
                    None => return Ok(None),
                },
            };
            if !Self::REPLACES_TOKEN_HOLDER {
                sqlx::query(
                    "DELETE FROM push_tokens \
                     WHERE family = $1 AND push_token = $2 AND user_id <> $3",
                )
                .bind(write.family.as_str())
                .bind(&write.input.push_token)
                .bind(write.user_id)
                .execute(&mut *conn)
                .await?;
            }
            if update {
                let row = Self::update_row(conn, write, serial).await?;
                row.map(|row| Some(Written::Updated(row)))
                    .ok_or(sqlx::Error::RowNotFound)
            } else {
                let row = Self::insert_row(conn, write, serial).await?;
                Ok(Some(Written::Created(row)))
            }
        }

        /// Updates the row at `serial` (absent optional fields keep their
        /// stored values); `None` when there is none.
        async fn update_row(
            conn: &mut <$db as sqlx::Database>::Connection,
            write: &PushTokenWrite,
            serial: i64,
        ) -> Result<Option<PushTokenRow>, sqlx::Error> {
            let input = &write.input;
            sqlx::query_as(&update_row_sql(Self::UPDATE_ROW))
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
            .fetch_optional(&mut *conn)
            .await
        }

        /// Inserts the row at `serial`; absent optional fields take their
        /// defaults.
        async fn insert_row(
            conn: &mut <$db as sqlx::Database>::Connection,
            write: &PushTokenWrite,
            serial: i64,
        ) -> Result<PushTokenRow, sqlx::Error> {
            let input = &write.input;
            sqlx::query_as(&format!(
                "{INSERT} INTO push_tokens (user_id, family, serial, push_token, language, dev, \
                 bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                 RETURNING {ROW_COLUMNS}",
                INSERT = Self::INSERT_ROW,
            ))
            .bind(write.user_id)
            .bind(write.family.as_str())
            .bind(serial)
            .bind(&input.push_token)
            .bind(&input.language)
            .bind(input.dev.unwrap_or(0))
            .bind(input.bundleid.as_deref().unwrap_or(&write.default_bundleid))
            .bind(input.os.as_deref().unwrap_or(""))
            .bind(input.os_token.as_deref().unwrap_or(""))
            .bind(input.push_platform.as_deref().unwrap_or(""))
            .bind(input.phone_model.as_deref().unwrap_or(""))
            .bind(write.now)
            .fetch_one(&mut *conn)
            .await
        }

        /// How many push tokens each family holds.
        pub async fn count_push_tokens(&self) -> StoreResult<Vec<(String, i64)>> {
            Ok(sqlx::query_as("SELECT family, COUNT(*) FROM push_tokens GROUP BY family")
                .fetch_all(&mut *self.reader().await?)
                .await?)
        }

        /// How many sessions have not expired.
        pub async fn count_active_sessions(&self, now: i64) -> StoreResult<i64> {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE expires_at > $1")
                .bind(now)
                .fetch_one(&mut *self.reader().await?)
                .await?)
        }
    };
}

pub(super) use job;
pub(super) use queries;
