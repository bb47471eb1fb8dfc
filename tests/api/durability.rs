//! Nothing acknowledged is lost when the server dies. The real binary is
//! killed with SIGKILL at random moments while clients stream writes, and
//! restarted on the same database; every write answered 2xx (and not
//! superseded by a later acknowledged one) must be there afterwards, every
//! acknowledged delete must stay deleted, and sessions keep working.
//!
//! The clients keep a model of what they were told. Each client owns one
//! (user, family) key space and sends one request at a time, each with a push
//! token never used before, so requests of different clients cannot touch the
//! same row and a request whose answer was lost (the server died under it)
//! can only have taken effect before the client's next request. Such a
//! request is "unknown": the model accepts both outcomes for the row it
//! names (or, for a POST, a row at a serial it could not learn), and checks
//! strictly every row whose last request was answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary::{command, Server};
use crate::common::{push_token, API_KEY, FAMILIES, PASSWORD};
use crate::on_every_database;

/// No single request may take longer than this; longer is a hang.
pub(crate) const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// Starts the real binary with extra environment settings.
pub(crate) async fn start_with(database_url: &str, env: &[(&str, &str)]) -> Server {
    let mut cmd = command(database_url);
    for (key, value) in env {
        cmd.env(key, value);
    }
    Server::spawn(cmd).await
}

/// What became of one request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A complete HTTP answer with a JSON body.
    Answered { status: u16, body: Value },
    /// The connection could not be made: the server never saw the request.
    NotSent,
    /// Sent (perhaps partly) but no complete answer came back: it may or may
    /// not have taken effect.
    Lost,
}

/// One HTTP/1.1 request over a fresh connection that never panics on a
/// broken connection (unlike `Server::call`). Panics on a hang (over
/// [`REQUEST_LIMIT`]) and on a complete answer whose body is not JSON.
pub(crate) async fn try_call(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let exchange = async {
        let Ok(mut stream) = TcpStream::connect(address).await else {
            return Outcome::NotSent;
        };
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = token.map(|t| format!("Token: {t}\r\n")).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return Outcome::Lost;
        }
        let mut raw = Vec::new();
        if stream.read_to_end(&mut raw).await.is_err() {
            return Outcome::Lost;
        }
        match parse_response(&raw) {
            Some((status, body)) => {
                let body = serde_json::from_slice(body).unwrap_or_else(|_| {
                    panic!(
                        "{method} {path}: {status} with a body that is not JSON: {}",
                        String::from_utf8_lossy(body)
                    )
                });
                Outcome::Answered { status, body }
            }
            None => Outcome::Lost,
        }
    };
    let outcome = tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung for {REQUEST_LIMIT:?}"));
    (outcome, started.elapsed())
}

/// Status and body of a complete HTTP/1.1 answer (interim 1xx answers
/// skipped); `None` when it is cut short.
pub(crate) fn parse_response(mut raw: &[u8]) -> Option<(u16, &[u8])> {
    loop {
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&raw[..head_end]).ok()?;
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        let rest = &raw[head_end + 4..];
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(rest.len());
        return (rest.len() >= length).then(|| (status, &rest[..length]));
    }
}

/// Signs `username` up and logs in through the binary; returns the session
/// token.
pub(crate) async fn session(server: &Server, username: &str) -> String {
    let sign_up = json!({ "username": username, "password": PASSWORD, "apikey": API_KEY });
    let (status, body) = server
        .call("POST", "/v1/api/user", None, Some(sign_up))
        .await;
    assert_eq!(status, 201, "sign up {username}: {body}");
    let login = json!({ "username": username, "password": PASSWORD });
    let (status, body) = server
        .call("POST", "/v1/api/user/login", None, Some(login))
        .await;
    assert_eq!(status, 201, "login {username}: {body}");
    body["token"].as_str().unwrap().to_owned()
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Put { serial: i64, token: String },
    Post { token: String },
    Delete { serial: i64 },
}

/// What a row may hold: every value it can have after the requests so far.
#[derive(Clone, Debug)]
struct RowState {
    /// `None` for no row, else the push token in it.
    possible: Vec<Option<String>>,
    /// Sequence number of the last answered request on this row (0: none).
    last_answered: u64,
}

impl Default for RowState {
    fn default() -> Self {
        RowState {
            possible: vec![None],
            last_answered: 0,
        }
    }
}

/// How a request was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Answered 2xx (or 404 for a delete): applied to the model.
    Acknowledged,
    /// 503 `10001`, or no complete answer: either outcome is possible.
    Unknown,
    /// Never reached the server.
    NotSent,
    /// An answer that breaks the contract (recorded as a violation).
    Wrong,
}

/// One client: a user's session and one family, with the model of its rows.
pub(crate) struct Writer {
    pub(crate) name: String,
    pub(crate) base: &'static str,
    pub(crate) session: String,
    rows: BTreeMap<i64, RowState>,
    /// POSTs whose answer was lost: (sequence number, push token).
    unknown_posts: Vec<(u64, String)>,
    seq: u64,
    tokens: Arc<AtomicU32>,
    pub(crate) acknowledged: u32,
    pub(crate) unknown: u32,
    pub(crate) unavailable: u32,
    pub(crate) max_latency: Duration,
    /// The status of the last answer, if the last request was answered.
    pub(crate) last_status: Option<u16>,
    /// Addresses (server instances) that acknowledged at least one request.
    pub(crate) served_by: Vec<String>,
    pub(crate) violations: Vec<String>,
}

impl Writer {
    pub(crate) fn new(
        name: String,
        base: &'static str,
        session: String,
        tokens: Arc<AtomicU32>,
    ) -> Writer {
        Writer {
            name,
            base,
            session,
            rows: BTreeMap::new(),
            unknown_posts: Vec::new(),
            seq: 0,
            tokens,
            acknowledged: 0,
            unknown: 0,
            unavailable: 0,
            max_latency: Duration::ZERO,
            last_status: None,
            served_by: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn fresh_token(&self) -> String {
        push_token(self.tokens.fetch_add(1, Ordering::Relaxed))
    }

    /// A random write: PUT at a random serial, POST, or DELETE of a serial
    /// this client registered.
    pub(crate) fn pick(&self, rng: &mut StdRng) -> Op {
        let registered: Vec<i64> = self
            .rows
            .iter()
            .filter(|(_, row)| row.possible.iter().any(Option::is_some))
            .map(|(serial, _)| *serial)
            .collect();
        let roll: f64 = rng.gen();
        if roll < 0.3 && !registered.is_empty() {
            Op::Delete {
                serial: registered[rng.gen_range(0..registered.len())],
            }
        } else if roll < 0.65 {
            Op::Post {
                token: self.fresh_token(),
            }
        } else {
            Op::Put {
                serial: rng.gen_range(0..24),
                token: self.fresh_token(),
            }
        }
    }

    /// A PUT at a serial of its own, to make a write that must succeed.
    pub(crate) fn put_at(&self, serial: i64) -> Op {
        Op::Put {
            serial,
            token: self.fresh_token(),
        }
    }

    /// Sends `op` to `address` and applies its outcome to the model.
    pub(crate) async fn send(&mut self, address: &str, op: Op) -> Class {
        let (method, path, body) = match &op {
            Op::Put { serial, token } => (
                "PUT",
                format!("{}/{serial}", self.base),
                Some(json!({ "push_token": token, "language": "en" })),
            ),
            Op::Post { token } => (
                "POST",
                self.base.to_owned(),
                Some(json!({ "push_token": token, "language": "en" })),
            ),
            Op::Delete { serial } => ("DELETE", format!("{}/{serial}", self.base), None),
        };
        let (outcome, elapsed) =
            try_call(address, method, &path, Some(&self.session), body.as_ref()).await;
        if matches!(outcome, Outcome::NotSent) {
            return Class::NotSent;
        }
        self.seq += 1;
        self.max_latency = self.max_latency.max(elapsed);
        let class = self.apply(&op, outcome);
        match class {
            Class::Acknowledged => {
                self.acknowledged += 1;
                if !self.served_by.iter().any(|a| a == address) {
                    self.served_by.push(address.to_owned());
                }
            }
            Class::Unknown | Class::Wrong => {
                self.unknown += 1;
                self.note_unknown(&op);
            }
            Class::NotSent => unreachable!(),
        }
        class
    }

    fn violation(&mut self, text: String) {
        self.violations.push(format!(
            "{} {} request {}: {text}",
            self.name, self.base, self.seq
        ));
    }

    /// Whether a row may exist at `serial` now (an acknowledged or unknown
    /// write there, or a lost POST after its last answered request).
    fn may_hold_row(&self, serial: i64) -> bool {
        let row = self.rows.get(&serial).cloned().unwrap_or_default();
        row.possible.iter().any(Option::is_some)
            || self
                .unknown_posts
                .iter()
                .any(|(seq, _)| *seq > row.last_answered)
    }

    fn may_be_empty(&self, serial: i64) -> bool {
        self.rows
            .get(&serial)
            .is_none_or(|row| row.possible.contains(&None))
    }

    fn acknowledge(&mut self, serial: i64, value: Option<String>) {
        self.rows.insert(
            serial,
            RowState {
                possible: vec![value],
                last_answered: self.seq,
            },
        );
    }

    fn note_unknown(&mut self, op: &Op) {
        match op {
            Op::Put { serial, token } => self
                .rows
                .entry(*serial)
                .or_default()
                .possible
                .push(Some(token.clone())),
            Op::Post { token } => self.unknown_posts.push((self.seq, token.clone())),
            Op::Delete { serial } => self.rows.entry(*serial).or_default().possible.push(None),
        }
    }

    fn expected_rows(&self, serial: i64) -> String {
        format!("{:?}", self.rows.get(&serial).map(|r| &r.possible))
    }

    fn apply(&mut self, op: &Op, outcome: Outcome) -> Class {
        self.last_status = None;
        let (status, body) = match outcome {
            Outcome::Answered { status, body } => (status, body),
            Outcome::Lost => return Class::Unknown,
            Outcome::NotSent => return Class::NotSent,
        };
        self.last_status = Some(status);
        if status == 503 {
            self.unavailable += 1;
            if body != json!({ "message": "10001" }) {
                self.violation(format!("503 with {body}, not {{\"message\":\"10001\"}}"));
                return Class::Wrong;
            }
            return Class::Unknown;
        }
        match (op, status) {
            (Op::Put { serial, token }, 200 | 201) => {
                if body["message"] != "success"
                    || body["serial"] != *serial
                    || body["push_token"] != token.as_str()
                {
                    self.violation(format!("PUT {serial} answered {status} {body}"));
                }
                if status == 201 && !self.may_be_empty(*serial) {
                    let expected = self.expected_rows(*serial);
                    self.violation(format!(
                        "PUT {serial} created a row where acknowledged {expected} was: LOST"
                    ));
                }
                if status == 200 && !self.may_hold_row(*serial) {
                    self.violation(format!("PUT {serial} updated a row that was deleted"));
                }
                self.acknowledge(*serial, Some(token.clone()));
                Class::Acknowledged
            }
            (Op::Post { token }, 201) => {
                let Some(serial) = body["serial"].as_i64() else {
                    self.violation(format!("POST answered 201 {body}"));
                    return Class::Wrong;
                };
                if body["message"] != "success" || body["push_token"] != token.as_str() {
                    self.violation(format!("POST answered 201 {body}"));
                }
                if !self.may_be_empty(serial) {
                    let expected = self.expected_rows(serial);
                    self.violation(format!(
                        "POST created serial {serial} where acknowledged {expected} was: LOST"
                    ));
                }
                self.acknowledge(serial, Some(token.clone()));
                Class::Acknowledged
            }
            (Op::Delete { serial }, 200) => {
                if body != json!({ "message": "success" }) {
                    self.violation(format!("DELETE {serial} answered 200 {body}"));
                }
                if !self.may_hold_row(*serial) {
                    self.violation(format!(
                        "DELETE {serial} found a row after an acknowledged delete: RESURRECTED"
                    ));
                }
                self.acknowledge(*serial, None);
                Class::Acknowledged
            }
            (Op::Delete { serial }, 404) => {
                if body["message"] != "no data error" {
                    self.violation(format!("DELETE {serial} answered 404 {body}"));
                }
                if !self.may_be_empty(*serial) {
                    let expected = self.expected_rows(*serial);
                    self.violation(format!(
                        "DELETE {serial} answered 404 where acknowledged {expected} was: LOST"
                    ));
                }
                self.acknowledge(*serial, None);
                Class::Acknowledged
            }
            (op, status) => {
                self.violation(format!("{op:?} answered {status} {body}"));
                Class::Wrong
            }
        }
    }

    /// Sends random writes until `stop`, reading the server's address before
    /// each (it changes on restart). A request that cannot connect is tried
    /// again shortly (the server is restarting).
    pub(crate) async fn run(&mut self, address: &RwLock<String>, stop: &AtomicBool, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut op = None;
        while !stop.load(Ordering::SeqCst) {
            let next = op.take().unwrap_or_else(|| self.pick(&mut rng));
            let address = address.read().unwrap().clone();
            if self.send(&address, next.clone()).await == Class::NotSent {
                op = Some(next);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Compares the server's list with the model; violations are recorded.
    pub(crate) async fn verify(&mut self, address: &str) {
        let (outcome, _) = try_call(address, "GET", self.base, Some(&self.session), None).await;
        let Outcome::Answered { status: 200, body } = outcome else {
            self.violation(format!("the final list could not be read: {outcome:?}"));
            return;
        };
        let mut stored: BTreeMap<i64, String> = BTreeMap::new();
        for row in body.as_array().expect("a list") {
            let serial = row["serial"].as_i64().unwrap();
            stored.insert(serial, row["push_token"].as_str().unwrap().to_owned());
        }
        let mut serials: Vec<i64> = self.rows.keys().chain(stored.keys()).copied().collect();
        serials.sort_unstable();
        serials.dedup();
        for serial in serials {
            let row = self.rows.get(&serial).cloned().unwrap_or_default();
            let found = stored.get(&serial).cloned();
            if row.possible.contains(&found) {
                continue;
            }
            // A POST whose answer was lost may have made this row, if it
            // came after the last answered request on the serial.
            let from_lost_post = found.as_ref().is_some_and(|token| {
                row.possible.contains(&None)
                    && self
                        .unknown_posts
                        .iter()
                        .any(|(seq, t)| t == token && *seq > row.last_answered)
            });
            if from_lost_post {
                continue;
            }
            let what = match (&row.possible[..], &found) {
                ([Some(_)], _) if row.last_answered > 0 => "acknowledged write LOST",
                ([None], Some(_)) if row.last_answered > 0 => "acknowledged delete UNDONE",
                (_, Some(_)) => "a row nobody wrote",
                _ => "unexpected state",
            };
            self.violation(format!(
                "serial {serial}: {what}: stored {found:?}, expected one of {:?}",
                row.possible
            ));
        }
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} {}: {} acknowledged, {} unknown ({} answered 503), max latency {:?}",
            self.name,
            self.base,
            self.acknowledged,
            self.unknown,
            self.unavailable,
            self.max_latency
        )
    }
}

/// Asserts that no writer recorded a violation, listing them all.
#[track_caller]
pub(crate) fn assert_no_violations(writers: &[Writer]) {
    let violations: Vec<&String> = writers.iter().flat_map(|w| &w.violations).collect();
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations
            .iter()
            .take(40)
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// One writer per user and family, each on its own task, until `stop`.
pub(crate) fn spawn_writers(
    sessions: &[String],
    address: &Arc<RwLock<String>>,
    stop: &Arc<AtomicBool>,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<Writer>> {
    let tokens = Arc::new(AtomicU32::new(1));
    let mut tasks = Vec::new();
    for (u, session) in sessions.iter().enumerate() {
        for (f, base) in FAMILIES.into_iter().enumerate() {
            let mut writer =
                Writer::new(format!("user {u}"), base, session.clone(), tokens.clone());
            let (address, stop) = (address.clone(), stop.clone());
            let seed = seed.wrapping_add((u * 2 + f) as u64);
            tasks.push(tokio::spawn(async move {
                writer.run(&address, &stop, seed).await;
                writer
            }));
        }
    }
    tasks
}

pub(crate) async fn join_writers(tasks: Vec<tokio::task::JoinHandle<Writer>>) -> Vec<Writer> {
    let mut writers = Vec::new();
    for task in tasks {
        writers.push(task.await.expect("a writer panicked"));
    }
    writers
}

/// Kills the server with SIGKILL and waits until it is gone.
async fn kill_hard(server: &mut Server) {
    server.child.start_kill().expect("SIGKILL");
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("a killed server is gone within 10s")
        .unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
}

async fn acknowledged_writes_and_sessions_survive_repeated_sigkill(database_url: &str) {
    survive_repeated_sigkill(database_url, &[]).await;
}

/// `synchronous=normal` skips the sync at each commit, but a commit is in
/// the WAL file (the operating system's cache) before it is acknowledged,
/// so a crash of the process still loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_synchronous_normal_loses_nothing_on_sigkill() {
    let db = crate::common::TestDb::sqlite();
    survive_repeated_sigkill(&db.url(), &[("PUSHTOKEN_SQLITE_SYNCHRONOUS", "normal")]).await;
}

async fn survive_repeated_sigkill(database_url: &str, env: &[(&str, &str)]) {
    const CRASHES: usize = 5;
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = start_with(database_url, env).await;
    let mut sessions = Vec::new();
    for n in 0..3 {
        sessions.push(session(&server, &format!("writer_{n}")).await);
    }
    let address = Arc::new(RwLock::new(server.address.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = spawn_writers(&sessions, &address, &stop, seed);

    let started = Instant::now();
    for _ in 0..CRASHES {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
        kill_hard(&mut server).await;
        server = start_with(database_url, env).await;
        *address.write().unwrap() = server.address.clone();
    }
    // Some writes on the last instance too, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut writers = join_writers(tasks).await;
    let elapsed = started.elapsed();

    for writer in &mut writers {
        writer.verify(&server.address).await;
        eprintln!("{}", writer.summary());
    }
    eprintln!("{CRASHES} crashes in {elapsed:?}");
    assert_no_violations(&writers);
    let acknowledged: u32 = writers.iter().map(|w| w.acknowledged).sum();
    assert!(
        acknowledged >= 100,
        "only {acknowledged} writes acknowledged"
    );
    let instances = writers
        .iter()
        .flat_map(|w| w.served_by.iter())
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(
        instances,
        CRASHES + 1,
        "every instance (each restart) acknowledged writes"
    );
    // Sessions survived every restart: no writer was ever refused (a 401 is
    // a violation), and each token still works on the last instance.
    for token in &sessions {
        let (status, body) = server.call("GET", FAMILIES[0], Some(token), None).await;
        assert_eq!(status, 200, "the session survives: {body}");
    }
    server.stop().await;
}

on_every_database!(acknowledged_writes_and_sessions_survive_repeated_sigkill,);
