//! The service keeps answering under faults: a graceful stop under load
//! (SIGTERM), PostgreSQL connections terminated under load, and the SQLite
//! file locked by another process. Each fault ends with the service answering
//! again by itself and nothing acknowledged lost (the writers' model of
//! `support::writers`).
//!
//! What a graceful stop promises, precisely: a request the server has begun
//! to handle (here: one whose handler asked for its body with
//! `100 Continue`) is finished and answered normally; new connections are
//! refused as soon as the signal is handled; the process exits 0 once the
//! in-flight requests are done. A connection the kernel accepted in the
//! instant before the signal, whose bytes the server had not yet read, may be
//! closed unanswered (hyper-util's version sniffing is cancelled on shutdown
//! without reading what is buffered); such a request was never processed and
//! is counted as "cut", not failed.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::api::{push_token, FAMILIES, MESSAGE, RING};
use crate::support::server::{sqlite_in, Server};
use crate::support::wire::{parse_response, request_head, try_call, Outcome};
use crate::support::writers::{
    assert_no_violations, join_writers, spawn_writers, verify_all, Class, Writer,
};
use crate::support::{every_database, TestDb};

/// A request of the load, and what became of it.
struct Record {
    method: &'static str,
    started: Instant,
    finished: Instant,
    outcome: Outcome,
}

/// A PUT whose head has been read by the server and whose handler is
/// waiting for the body (the server sent `100 Continue`): a request being
/// processed for certain.
struct InFlight {
    stream: TcpStream,
    serial: i64,
    token: String,
    body: Vec<u8>,
}

impl InFlight {
    async fn open(address: &str, session: &str, serial: i64, token: String) -> InFlight {
        let body = json!({ "push_token": token, "language": "en" })
            .to_string()
            .into_bytes();
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let head = request_head(
            "PUT",
            &format!("{RING}/{serial}"),
            address,
            &[("Token", session), ("Expect", "100-continue")],
            body.len(),
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        let mut interim = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !interim.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                stream.read_exact(&mut byte).await.expect("read 100");
                interim.push(byte[0]);
            }
        })
        .await
        .expect("100 Continue within 10s");
        let interim = String::from_utf8_lossy(&interim);
        assert!(
            interim.starts_with("HTTP/1.1 100"),
            "the handler reads the body: {interim}"
        );
        InFlight {
            stream,
            serial,
            token,
            body,
        }
    }

    /// Sends the body and reads the answer.
    async fn finish(mut self) -> (u16, Value, i64, String) {
        self.stream
            .write_all(&self.body)
            .await
            .expect("an in-flight request's connection stays open after SIGTERM");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut raw))
            .await
            .expect("answered within 10s")
            .expect("an in-flight request is answered, not reset");
        let (status, body) = parse_response(&raw).unwrap_or_else(|| {
            panic!(
                "an in-flight request gets a whole answer: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
        let body = serde_json::from_slice(body).expect("json");
        (status, body, self.serial, self.token)
    }
}

#[every_database]
async fn sigterm_under_load_finishes_in_flight_requests_refuses_new_ones_and_exits_0(
    database_url: &str,
) {
    const CLIENTS: usize = 50;
    let mut server = Server::start(database_url).await;
    // Ten clients a user: POSTs of one user race for the next serial, and
    // that contention is the subject of another test.
    let sessions = server.sessions("loader", 5).await;
    let sessions = Arc::new(sessions);
    let address = server.address.clone();
    let tokens = Arc::new(AtomicU32::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let mut load = Vec::new();
    for client in 0..CLIENTS {
        let (address, sessions, tokens, stop, records) = (
            address.clone(),
            sessions.clone(),
            tokens.clone(),
            stop.clone(),
            records.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(client as u64);
            let session = &sessions[client % sessions.len()];
            while !stop.load(Ordering::SeqCst) {
                let token = push_token(tokens.fetch_add(1, Ordering::Relaxed));
                let body = json!({ "push_token": token, "language": "en" });
                let serial = rng.gen_range(0..50);
                let (method, path, body) = match rng.gen_range(0..4) {
                    0 => ("GET", RING.to_owned(), None),
                    1 => ("PUT", format!("{RING}/{serial}"), Some(body)),
                    2 => ("POST", MESSAGE.to_owned(), Some(body)),
                    _ => ("DELETE", format!("{RING}/{serial}"), None),
                };
                let started = Instant::now();
                let (outcome, _) =
                    try_call(&address, method, &path, Some(session), body.as_ref()).await;
                let not_sent = matches!(outcome, Outcome::NotSent);
                records.lock().unwrap().push(Record {
                    method,
                    started,
                    finished: Instant::now(),
                    outcome,
                });
                if not_sent {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Requests certainly in the handler when the signal comes.
    let mut in_flight = Vec::new();
    for n in 0..4 {
        let token = push_token(1_000_000 + n);
        in_flight.push(InFlight::open(&address, &sessions[0], 1000 + i64::from(n), token).await);
    }
    // Taken before the signal is sent: anything started later may race it.
    let signalled = Instant::now();
    server.sigterm();

    // The listener closes at once, while the in-flight requests keep the
    // process alive.
    let refused_after = loop {
        if TcpStream::connect(&address).await.is_err() {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "new connections are still accepted 3s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server waits for its in-flight requests"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server still waits for its in-flight requests"
    );
    assert!(
        TcpStream::connect(&address).await.is_err(),
        "new connections stay refused while draining"
    );

    let mut finished = Vec::new();
    for request in in_flight {
        finished.push(request.finish().await);
    }
    let exit = tokio::time::timeout(
        Duration::from_secs(10).saturating_sub(signalled.elapsed()),
        server.child.wait(),
    )
    .await
    .expect("the server exits within 10s of SIGTERM")
    .unwrap();
    let exited_after = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("a load client panicked");
    }
    assert!(exit.success(), "exit status {exit:?}");

    for (status, body, serial, token) in &finished {
        assert_eq!(*status, 201, "in-flight PUT {serial}: {body}");
        assert_eq!(body["message"], "success", "{body}");
        assert_eq!(body["serial"], *serial, "{body}");
        assert_eq!(body["push_token"], token.as_str(), "{body}");
    }

    let records = std::mem::take(&mut *records.lock().unwrap());
    let mut problems = Vec::new();
    let (mut before, mut after, mut lost, mut not_sent) = (0, 0, 0, 0);
    let mut straddling = 0;
    for record in &records {
        let since_signal = record.started.checked_duration_since(signalled);
        match &record.outcome {
            Outcome::Answered { status, body } => {
                let expected: &[u16] = match record.method {
                    "GET" => &[200],
                    "PUT" => &[200, 201],
                    "POST" => &[201],
                    _ => &[200, 404],
                };
                if !expected.contains(status) {
                    problems.push(format!(
                        "{} answered {status} {body} (started {:?} {} SIGTERM, took {:?})",
                        record.method,
                        since_signal.unwrap_or_else(|| signalled.duration_since(record.started)),
                        if since_signal.is_some() {
                            "after"
                        } else {
                            "before"
                        },
                        record.finished - record.started
                    ));
                }
                if since_signal.is_some() {
                    after += 1;
                } else {
                    before += 1;
                    if record.finished > signalled {
                        straddling += 1;
                    }
                }
            }
            // A connection the kernel took but the server had not started
            // reading is dropped when it stops (see the module notes); one
            // made a second before the signal was read, so it must be
            // answered, and connecting must not fail before the signal.
            Outcome::Lost | Outcome::NotSent => {
                if matches!(record.outcome, Outcome::Lost) {
                    lost += 1;
                } else {
                    not_sent += 1;
                }
                if since_signal.is_none()
                    && signalled.duration_since(record.started) > Duration::from_secs(1)
                {
                    problems.push(format!(
                        "{} started {:?} before SIGTERM: {:?}",
                        record.method,
                        signalled.duration_since(record.started),
                        record.outcome
                    ));
                }
            }
        }
    }
    eprintln!(
        "{} requests: {before} answered (started before SIGTERM, {straddling} of them \
         answered after it), {after} answered (started after), {lost} cut, {not_sent} \
         refused; refused new connections {refused_after:?} after SIGTERM, exited after \
         {exited_after:?}",
        records.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(before >= 100, "the load ran: {before} answered");

    // The in-flight writes were committed before the process exited.
    let server = Server::start(database_url).await;
    let (status, rows) = server.call("GET", RING, Some(&sessions[0]), None).await;
    assert_eq!(status, 200, "the session survives: {rows}");
    for (_, _, serial, token) in &finished {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["serial"] == *serial);
        assert_eq!(
            row.map(|row| &row["push_token"]),
            Some(&json!(token)),
            "in-flight PUT {serial} is stored"
        );
    }
    server.stop().await;
}

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

/// Many clients of one user POST new tokens to one family at once, with no
/// fault at all: each POST is answered 201 at a serial of its own.
#[every_database]
async fn concurrent_posts_by_one_user_are_all_answered_201(database_url: &str) {
    const CLIENTS: usize = 50;
    const POSTS: u32 = 20;
    let server = Server::start(database_url).await;
    let session = Arc::new(server.session("poster_1").await);
    let tokens = Arc::new(AtomicU32::new(1));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (address, session, tokens) = (server.address.clone(), session.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..POSTS {
                let token = push_token(tokens.fetch_add(1, Ordering::Relaxed));
                let body = json!({ "push_token": token, "language": "en" });
                let (outcome, _) =
                    try_call(&address, "POST", MESSAGE, Some(&session), Some(&body)).await;
                answers.push(outcome);
            }
            answers
        }));
    }
    let (mut created, mut refused) = (0, Vec::new());
    for task in tasks {
        for outcome in task.await.unwrap() {
            match outcome {
                Outcome::Answered { status: 201, .. } => created += 1,
                other => refused.push(format!("{other:?}")),
            }
        }
    }
    let (status, rows) = server.call("GET", MESSAGE, Some(&session), None).await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap().len();
    server.stop().await;
    assert_eq!(rows, created, "one row per 201");
    assert!(
        refused.is_empty(),
        "{} of {} POSTs were not answered 201, e.g. {:?}",
        refused.len(),
        CLIENTS * POSTS as usize,
        &refused[..refused.len().min(3)]
    );
}
