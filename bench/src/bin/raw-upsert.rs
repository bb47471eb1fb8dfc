//! The database ceiling, and bulk loading for the growth run. Works on a
//! database that `pushtoken migrate` has prepared (same schema as the server).
//!
//!   raw-upsert upsert URL [--duration SECS] [--max N] [--mode tx|on-conflict]
//!       One connection, no HTTP: upserts a fresh push token per iteration
//!       into serials 1..3 of one user, and prints upserts/s as JSON.
//!       `tx` (default) runs the statements the server's PUT runs
//!       (src/store/queries.rs `Queries::put_row` on PostgreSQL): BEGIN; DELETE the token
//!       from any other row; SELECT EXISTS; UPDATE … RETURNING (or INSERT …
//!       RETURNING); COMMIT. `on-conflict` is the minimal form: a single
//!       autocommit INSERT … ON CONFLICT (user_id, family, serial) DO UPDATE.
//!   raw-upsert seed URL [--users 100000] [--per-user 10]
//!       Bulk-loads users (bulk_NNNNNN), one session each and `per-user`
//!       tokens each (half ring, half message), through SQL.
//!   raw-upsert explain URL
//!       Prints the query plans of the hot queries.
//!
//! SQLite URLs (sqlite://path) are opened like the server opens them: WAL,
//! synchronous=FULL, foreign keys on.

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};

const ROW_COLUMNS: &str = "user_id, serial, push_token, language, dev, bundleid, \
     os, os_token, push_platform, phone_model, created_at, updated_at";

fn flag(argv: &[String], name: &str) -> Option<String> {
    let f = format!("--{name}");
    argv.iter()
        .position(|a| *a == f)
        .and_then(|i| argv.get(i + 1))
        .cloned()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The upsert loop, written once for both backends.
macro_rules! upsert_loop {
    ($conn:expr, $mode:expr, $duration:expr, $max:expr) => {{
        let conn = $conn;
        sqlx::query(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('raw_upsert_user', 'x', $1) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(now())
        .execute(&mut *conn)
        .await?;
        let user_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE username = 'raw_upsert_user'")
            .fetch_one(&mut *conn)
            .await?;
        let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
        let start = Instant::now();
        let deadline = start + $duration;
        let mut n: u64 = 0;
        while n < $max && Instant::now() < deadline {
            let token = format!("{:016x}{:048x}", nonce, n);
            let serial = 1 + (n % 3) as i64;
            let t = now();
            if $mode == "on-conflict" {
                sqlx::query(&format!(
                    "INSERT INTO push_tokens (user_id, family, serial, push_token, language, dev, \
                     bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
                     VALUES ($1, 'ring', $2, $3, 'en', 0, 'com.lancens.wxdoorbell', '', '', '', '', $4, $4) \
                     ON CONFLICT (user_id, family, serial) DO UPDATE SET push_token = excluded.push_token, \
                     language = excluded.language, updated_at = excluded.updated_at RETURNING {ROW_COLUMNS}"
                ))
                .bind(user_id)
                .bind(serial)
                .bind(&token)
                .bind(t)
                .fetch_one(&mut *conn)
                .await?;
            } else {
                let mut tx = conn.begin().await?;
                sqlx::query(
                    "DELETE FROM push_tokens WHERE family = $1 AND push_token = $2 \
                     AND NOT (user_id = $3 AND serial = $4)",
                )
                .bind("ring")
                .bind(&token)
                .bind(user_id)
                .bind(serial)
                .execute(&mut *tx)
                .await?;
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM push_tokens WHERE user_id = $1 AND family = $2 AND serial = $3)",
                )
                .bind(user_id)
                .bind("ring")
                .bind(serial)
                .fetch_one(&mut *tx)
                .await?;
                if exists {
                    sqlx::query(&format!(
                        "UPDATE push_tokens SET push_token = $1, language = $2, \
                         dev = COALESCE($3, dev), bundleid = COALESCE($4, bundleid), \
                         os = COALESCE($5, os), os_token = COALESCE($6, os_token), \
                         push_platform = COALESCE($7, push_platform), \
                         phone_model = COALESCE($8, phone_model), updated_at = $9 \
                         WHERE user_id = $10 AND family = $11 AND serial = $12 RETURNING {ROW_COLUMNS}"
                    ))
                    .bind(&token)
                    .bind("en")
                    .bind(None::<i64>)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(t)
                    .bind(user_id)
                    .bind("ring")
                    .bind(serial)
                    .fetch_one(&mut *tx)
                    .await?;
                } else {
                    sqlx::query(&format!(
                        "INSERT INTO push_tokens (user_id, family, serial, push_token, language, dev, \
                         bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING {ROW_COLUMNS}"
                    ))
                    .bind(user_id)
                    .bind("ring")
                    .bind(serial)
                    .bind(&token)
                    .bind("en")
                    .bind(0i64)
                    .bind("com.lancens.wxdoorbell")
                    .bind("")
                    .bind("")
                    .bind("")
                    .bind("")
                    .bind(t)
                    .fetch_one(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        (n, secs)
    }};
}

async fn upsert(url: &str, argv: &[String]) -> Result<()> {
    let duration = Duration::from_secs_f64(flag(argv, "duration").map_or(Ok(5.0), |v| v.parse())?);
    let max: u64 = flag(argv, "max").map_or(Ok(1_000_000), |v| v.parse())?;
    let mode = flag(argv, "mode").unwrap_or_else(|| "tx".into());
    if mode != "tx" && mode != "on-conflict" {
        bail!("--mode tx|on-conflict");
    }
    let (n, secs) = if url.starts_with("sqlite:") {
        let mut conn = sqlite_options(url)?.connect().await?;
        upsert_loop!(&mut conn, mode, duration, max)
    } else {
        let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
        upsert_loop!(&mut conn, mode, duration, max)
    };
    println!(
        "{}",
        serde_json::json!({"scenario": format!("raw-upsert-{mode}"), "conns": 1, "requests": n,
                           "secs": secs, "rps": n as f64 / secs})
    );
    Ok(())
}

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30)))
}

async fn seed(url: &str, argv: &[String]) -> Result<()> {
    let users: i64 = flag(argv, "users").map_or(Ok(100_000), |v| v.parse())?;
    let per_user: i64 = flag(argv, "per-user").map_or(Ok(10), |v| v.parse())?;
    let half = (per_user + 1) / 2;
    let t = now();
    let started = Instant::now();
    if url.starts_with("sqlite:") {
        let mut conn = sqlite_options(url)?.connect().await?;
        let mut tx = conn.begin().await?;
        for sql in [
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {users}) \
                 INSERT INTO users (id, username, password_hash, created_at) \
                 SELECT i, printf('bulk_%06d', i), 'no-login', {t} FROM n"
            ),
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {users}) \
                 INSERT INTO sessions (user_id, token_hash, refresh_hash, created_at, expires_at, refresh_expires_at) \
                 SELECT i, printf('s%063d', i), printf('r%063d', i), {t}, {t} + 2592000, {t} + 5184000 FROM n"
            ),
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {users} * {per_user} - 1) \
                 INSERT INTO push_tokens (user_id, family, serial, push_token, language, dev, bundleid, \
                 os, os_token, push_platform, phone_model, created_at, updated_at) \
                 SELECT 1 + i / {per_user}, CASE WHEN i % {per_user} < {half} THEN 'ring' ELSE 'message' END, \
                 1 + (i % {per_user}) % {half}, printf('%064d', i), 'zh', 0, 'com.lancens.wxdoorbell', \
                 'ANDROID', '', 'FCM', 'xiaomi6', {t}, {t} FROM n"
            ),
        ] {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // No ANALYZE: the server never runs it on SQLite. (The bundled
        // SQLite is built with STAT4; with `sqlite_stat4` filled, a
        // prepared statement is prepared again whenever a bound value
        // changes, which halves GET throughput: see BENCHMARKS.md.)
        // A database that grew to this size over time has had its WAL
        // checkpointed all along; a bulk load leaves it all in the WAL
        // (300 MB here), where every read would search it first.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
    } else {
        let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
        let mut tx = conn.begin().await?;
        for sql in [
            format!(
                "INSERT INTO users (id, username, password_hash, created_at) \
                 SELECT i, 'bulk_' || lpad(i::text, 6, '0'), 'no-login', {t} FROM generate_series(1, {users}) i"
            ),
            "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))".to_string(),
            format!(
                "INSERT INTO sessions (user_id, token_hash, refresh_hash, created_at, expires_at, refresh_expires_at) \
                 SELECT i, 's' || lpad(i::text, 63, '0'), 'r' || lpad(i::text, 63, '0'), {t}, {t} + 2592000, \
                 {t} + 5184000 FROM generate_series(1, {users}) i"
            ),
            format!(
                "INSERT INTO push_tokens (user_id, family, serial, push_token, language, dev, bundleid, \
                 os, os_token, push_platform, phone_model, created_at, updated_at) \
                 SELECT 1 + i / {per_user}, CASE WHEN i % {per_user} < {half} THEN 'ring' ELSE 'message' END, \
                 1 + (i % {per_user}) % {half}, lpad(i::text, 64, '0'), 'zh', 0, 'com.lancens.wxdoorbell', \
                 'ANDROID', '', 'FCM', 'xiaomi6', {t}, {t} FROM generate_series(0, {users} * {per_user} - 1) i"
            ),
        ] {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        sqlx::query("ANALYZE").execute(&mut conn).await?;
    }
    eprintln!(
        "seeded {users} users, {users} sessions, {} tokens in {:.1}s",
        users * per_user,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn explain(url: &str) -> Result<()> {
    // The server's queries (src/store/queries.rs; SQLite's PUT in src/store/sqlite.rs), with literals for binds.
    let sqlite = url.starts_with("sqlite:");
    let mut queries = vec![
        ("GET: the session and its rows, in one query",
         "SELECT s.user_id AS owner, p.serial, p.push_token, p.language FROM sessions s \
          LEFT JOIN push_tokens p ON p.user_id = s.user_id AND p.family = 'ring' \
          WHERE s.token_hash = 's000000000000000000000000000000000000000000000000000000000000050' \
          AND s.expires_at > 0 ORDER BY p.serial"),
        ("session lookup (the other authenticated requests)",
         "SELECT s.id, s.user_id, u.username FROM sessions s JOIN users u ON u.id = s.user_id \
          WHERE s.token_hash = 's000000000000000000000000000000000000000000000000000000000000050' AND s.expires_at > 0"),
        ("POST: the caller's row holding the token, and the highest serial",
         "SELECT (SELECT serial FROM push_tokens WHERE family = 'ring' AND push_token = 'x' AND user_id = 5), \
                 (SELECT MAX(serial) FROM push_tokens WHERE user_id = 5 AND family = 'ring')"),
        ("DELETE one", "DELETE FROM push_tokens WHERE user_id = 5 AND family = 'ring' AND serial = 1"),
    ];
    if sqlite {
        // OR REPLACE also probes UNIQUE (family, push_token) for a clashing
        // row to delete: an index search, not shown in the plan.
        queries.push((
            "PUT: store the row (OR REPLACE takes the token from its holder)",
            "UPDATE OR REPLACE push_tokens SET push_token = 'x', language = 'en' \
             WHERE user_id = 5 AND family = 'ring' AND serial = 1",
        ));
        queries.push((
            "PUT: create the row if there was none",
            "INSERT OR REPLACE INTO push_tokens (user_id, family, serial, push_token, language, \
             dev, bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
             SELECT 5, 'ring', 1, 'x', 'en', 0, '', '', '', '', '', 0, 0 \
             WHERE NOT EXISTS (SELECT 1 FROM push_tokens \
                               WHERE user_id = 5 AND family = 'ring' AND serial = 1)",
        ));
    } else {
        queries.push(("PUT: the token leaves other rows",
            "DELETE FROM push_tokens WHERE family = 'ring' AND push_token = 'x' AND NOT (user_id = 5 AND serial = 1)"));
        queries.push((
            "PUT: store the row",
            "UPDATE push_tokens SET push_token = 'x', language = 'en' \
             WHERE user_id = 5 AND family = 'ring' AND serial = 1",
        ));
    }
    if sqlite {
        let mut conn = sqlite_options(url)?.connect().await?;
        for (name, q) in queries {
            println!("-- {name}\n{q}");
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {q}"))
                .fetch_all(&mut conn)
                .await?;
            for r in rows {
                println!("   {}", r.try_get::<String, _>(3)?);
            }
        }
    } else {
        let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
        for (name, q) in queries {
            println!("-- {name}\n{q}");
            // Plans only (no ANALYZE): the DELETEs must not run.
            let rows = sqlx::query(&format!("EXPLAIN {q}"))
                .fetch_all(&mut conn)
                .await?;
            for r in rows {
                println!("   {}", r.try_get::<String, _>(0)?);
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let url = argv
        .get(2)
        .cloned()
        .ok_or_else(|| anyhow!("usage: raw-upsert upsert|seed|explain URL ..."))?;
    match argv[1].as_str() {
        "upsert" => upsert(&url, &argv).await,
        "seed" => seed(&url, &argv).await,
        "explain" => explain(&url).await,
        other => bail!("unknown command {other}"),
    }
}
