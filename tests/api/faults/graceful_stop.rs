//! A graceful stop (SIGTERM) under load.
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

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::api::{push_token, MESSAGE, RING};
use crate::support::every_database;
use crate::support::server::Server;
use crate::support::wire::{parse_response, request_head, try_call, Outcome};

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
