//! The writers' model of what the server acknowledged, for tests that crash
//! or break the real binary under load.
//!
//! Each writer owns one (user, family) key space and sends one request at a
//! time, each with a push token never used before, so requests of different
//! writers cannot touch the same row and a request whose answer was lost
//! (the server died under it) can only have taken effect before the
//! writer's next request. Such a request is "unknown": the model accepts
//! both outcomes for the row it names (or, for a POST, a row at a serial it
//! could not learn), and checks strictly every row whose last request was
//! answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::api::{push_token, FAMILIES};
use super::wire::{try_call, Outcome};

#[derive(Clone, Debug)]
pub enum Op {
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
pub enum Class {
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
pub struct Writer {
    pub name: String,
    pub base: &'static str,
    pub session: String,
    rows: BTreeMap<i64, RowState>,
    /// POSTs whose answer was lost: (sequence number, push token).
    unknown_posts: Vec<(u64, String)>,
    seq: u64,
    tokens: Arc<AtomicU32>,
    pub acknowledged: u32,
    pub unknown: u32,
    pub unavailable: u32,
    pub max_latency: Duration,
    /// The status of the last answer, if the last request was answered.
    pub last_status: Option<u16>,
    /// Addresses (server instances) that acknowledged at least one request.
    pub served_by: Vec<String>,
    pub violations: Vec<String>,
}

impl Writer {
    pub fn new(
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
    pub fn pick(&self, rng: &mut StdRng) -> Op {
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
    pub fn put_at(&self, serial: i64) -> Op {
        Op::Put {
            serial,
            token: self.fresh_token(),
        }
    }

    /// Sends `op` to `address` and applies its outcome to the model.
    pub async fn send(&mut self, address: &str, op: Op) -> Class {
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
    pub async fn run(&mut self, address: &RwLock<String>, stop: &AtomicBool, seed: u64) {
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
    pub async fn verify(&mut self, address: &str) {
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

    pub fn summary(&self) -> String {
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

/// Compares each writer's model with what the server at `address` lists
/// (violations are recorded) and prints its summary.
pub async fn verify_all(writers: &mut [Writer], address: &str) {
    for writer in writers {
        writer.verify(address).await;
        eprintln!("{}", writer.summary());
    }
}

/// Asserts that no writer recorded a violation, listing them all.
#[track_caller]
pub fn assert_no_violations(writers: &[Writer]) {
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
pub fn spawn_writers(
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

pub async fn join_writers(tasks: Vec<tokio::task::JoinHandle<Writer>>) -> Vec<Writer> {
    let mut writers = Vec::new();
    for task in tasks {
        writers.push(task.await.expect("a writer panicked"));
    }
    writers
}
