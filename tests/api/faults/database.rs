//! The database failing under load: PostgreSQL connections terminated, and
//! the SQLite file locked by another process. Requests answer 503 `10001`
//! quickly or succeed, the service recovers by itself, and nothing
//! acknowledged is lost.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::support::api::{FAMILIES, MESSAGE, RING};
use crate::support::server::{sqlite_in, Server};
use crate::support::wire::{try_call, Outcome};
use crate::support::writers::{
    assert_no_violations, join_writers, spawn_writers, verify_all, Class, Writer,
};
use crate::support::TestDb;

/// Each writer makes `count` acknowledged writes in a row (at serials from
/// `first`) before `deadline`: the service has recovered. Panics otherwise.
async fn assert_recovers(writers: &mut [Writer], address: &str, first: i64, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for writer in writers {
        let mut done = 0;
        while done < count {
            assert!(
                Instant::now() < deadline,
                "{} {} has not recovered 10s after the fault: {}",
                writer.name,
                writer.base,
                writer.summary()
            );
            let op = writer.put_at(first + done);
            match writer.send(address, op).await {
                Class::Acknowledged => done += 1,
                Class::Unknown => {
                    done = 0;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Class::Wrong => break, // a violation, reported with the others
                Class::NotSent => panic!("the server stopped listening"),
            }
        }
    }
}

/// A reader of both lists and `/readyz` until `stop`; returns the problems
/// it saw (anything but 200 or a 503 `10001`) and how many 503s.
async fn read_until(
    address: String,
    session: String,
    stop: Arc<AtomicBool>,
) -> (Vec<String>, u32, Duration) {
    let mut problems = Vec::new();
    let (mut unavailable, mut slowest) = (0, Duration::ZERO);
    while !stop.load(Ordering::SeqCst) {
        for path in [RING, MESSAGE, "/readyz"] {
            let (outcome, elapsed) = try_call(&address, "GET", path, Some(&session), None).await;
            slowest = slowest.max(elapsed);
            match outcome {
                Outcome::Answered { status: 200, .. } => {}
                Outcome::Answered { status: 503, body } if body == json!({"message": "10001"}) => {
                    unavailable += 1
                }
                other => problems.push(format!("GET {path}: {other:?}")),
            }
        }
    }
    (problems, unavailable, slowest)
}

/// Terminates every connection to database `name` but `admin`'s own; how
/// many were terminated.
async fn terminate_connections(admin: &mut sqlx::PgConnection, name: &str) -> usize {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(admin)
    .await
    .unwrap();
    killed.into_iter().filter(|k| *k).count()
}

#[tokio::test]
async fn postgres_connections_closed_while_idle_are_replaced_unnoticed() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let TestDb::Postgres { name, .. } = &db else {
        unreachable!()
    };
    let server = Server::start(&db.url()).await;
    let token = server.session("idle_1").await;
    for round in 0..3 {
        // The pool's connections sit idle, then the database closes them.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut admin = sqlx::PgConnection::connect(&db.url()).await.unwrap();
        let killed = terminate_connections(&mut admin, name).await;
        admin.close().await.unwrap();
        assert!(killed > 0, "round {round}: no server connection");
        for path in [RING, MESSAGE, RING] {
            let (outcome, _) = try_call(&server.address, "GET", path, Some(&token), None).await;
            assert!(
                matches!(outcome, Outcome::Answered { status: 200, .. }),
                "round {round}, GET {path}: {outcome:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_terminated_connections_answer_quickly_recover_and_lose_nothing_acknowledged() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let TestDb::Postgres { name, .. } = &db else {
        unreachable!()
    };
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = Server::start_with(&db.url(), &[("PUSHTOKEN_DB_ACQUIRE_TIMEOUT", "1s")]).await;
    let sessions = server.sessions("writer", 3).await;
    let address = Arc::new(RwLock::new(server.address.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = spawn_writers(&sessions, &address, &stop, seed);
    let reader = tokio::spawn(read_until(
        server.address.clone(),
        sessions[0].clone(),
        stop.clone(),
    ));

    let mut admin = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let mut terminated = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(250..500))).await;
        terminated.push(terminate_connections(&mut admin, name).await);
    }
    admin.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut writers = join_writers(tasks).await;
    let (read_problems, read_503, slowest_read) = reader.await.unwrap();

    assert_recovers(&mut writers, &server.address, 1000, 5).await;
    verify_all(&mut writers, &server.address).await;
    eprintln!(
        "terminated {terminated:?} server connections; reads: {read_503} answered 503, \
         slowest {slowest_read:?}"
    );
    assert!(
        terminated.iter().sum::<usize>() >= 6,
        "the server's connections were terminated: {terminated:?}"
    );
    assert!(read_problems.is_empty(), "{read_problems:#?}");
    assert_no_violations(&writers);
    let slowest = writers.iter().map(|w| w.max_latency).max().unwrap();
    assert!(
        slowest.max(slowest_read) < Duration::from_secs(5),
        "no request waits much past the 1s acquire timeout: {slowest:?}"
    );
    let (status, body) = server.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_file_answers_writes_503_quickly_serves_reads_and_recovers() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    const LOCK: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_in(dir.path());
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = Server::start_with(&url, &[("PUSHTOKEN_DB_ACQUIRE_TIMEOUT", "1s")]).await;
    let tokens = Arc::new(AtomicU32::new(1));
    let mut writers = Vec::new();
    for n in 0..2 {
        let session = server.session(&format!("writer_{n}")).await;
        for base in FAMILIES {
            writers.push(Writer::new(
                format!("user {n}"),
                base,
                session.clone(),
                tokens.clone(),
            ));
        }
    }
    // Acknowledged writes before the fault.
    for writer in &mut writers {
        for _ in 0..15 {
            let op = writer.pick(&mut rng);
            assert_eq!(writer.send(&server.address, op).await, Class::Acknowledged);
        }
    }

    // Another process's connection takes the write lock and keeps it.
    let mut locker = SqliteConnectOptions::from_str(&url)
        .unwrap()
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let locked = Instant::now();
    let release = locked + LOCK;

    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_until(
        server.address.clone(),
        writers[0].session.clone(),
        stop.clone(),
    ));
    let mut tasks = Vec::new();
    for (w, mut writer) in writers.into_iter().enumerate() {
        let address = server.address.clone();
        tasks.push(tokio::spawn(async move {
            // (serial, started, finished, status) of each write in the window.
            let mut tried = Vec::new();
            let mut serial = 500 + 100 * w as i64;
            while Instant::now() < release {
                let started = Instant::now();
                let class = writer.send(&address, writer.put_at(serial)).await;
                assert_ne!(class, Class::NotSent);
                tried.push((serial, started, Instant::now(), writer.last_status));
                serial += 1;
            }
            (writer, tried)
        }));
    }
    tokio::time::sleep_until(release.into()).await;
    // Writes that end before the release starts were refused for certain.
    let released = Instant::now();
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    let mut writers = Vec::new();
    let mut refused: BTreeMap<(String, &str), Vec<i64>> = BTreeMap::new();
    let mut problems = Vec::new();
    let (mut inside, mut slowest) = (0, Duration::ZERO);
    for task in tasks {
        let (writer, tried) = task.await.expect("a writer panicked");
        for (serial, started, finished, status) in tried {
            let elapsed = finished - started;
            slowest = slowest.max(elapsed);
            if elapsed > Duration::from_secs(3) {
                problems.push(format!("PUT {serial} took {elapsed:?} while locked"));
            }
            if finished <= released {
                inside += 1;
                if status != Some(503) {
                    problems.push(format!(
                        "PUT {serial} answered {status:?} while the file was locked"
                    ));
                }
            }
            if status == Some(503) {
                refused
                    .entry((writer.name.clone(), writer.base))
                    .or_default()
                    .push(serial);
            }
        }
        writers.push(writer);
    }
    stop.store(true, Ordering::SeqCst);
    let (read_problems, read_503, slowest_read) = reader.await.unwrap();
    eprintln!(
        "{inside} writes inside the {LOCK:?} lock (slowest {slowest:?}); reads: {read_503} \
         answered 503, slowest {slowest_read:?}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        inside >= 4,
        "writes were tried while locked: {inside} (a write took {slowest:?})"
    );
    assert!(
        read_problems.is_empty() && read_503 == 0,
        "reads go on while the file is locked (WAL): {read_problems:#?}, {read_503} answered 503"
    );
    assert!(slowest_read < Duration::from_secs(3), "{slowest_read:?}");

    assert_recovers(&mut writers, &server.address, 1000, 5).await;
    verify_all(&mut writers, &server.address).await;
    assert_no_violations(&writers);
    // A write refused with 503 left nothing behind.
    for ((name, base), serials) in &refused {
        let session = &writers.iter().find(|w| &w.name == name).unwrap().session;
        let (status, rows) = server.call("GET", base, Some(session), None).await;
        assert_eq!(status, 200);
        for row in rows.as_array().unwrap() {
            assert!(
                !serials.contains(&row["serial"].as_i64().unwrap()),
                "{name} {base}: a write answered 503 was stored: {row}"
            );
        }
    }
    server.stop().await;
}
