//! Property-based bodies, headers and path segments through the router on
//! every backend.
//!
//! The properties, for every request a generated case sends: the server
//! never panics and never answers 5xx (its database works), always answers
//! JSON with a `message` string and a status `openapi.yaml` lists, and when
//! it refuses (4xx) nothing changes: both families' rows of the caller and of
//! another user, the accounts, the active sessions, and the caller can still
//! log in. A success (2xx) may change the caller's data (the case was valid
//! after all); the other user's rows never change.
//!
//! `HOSTILE_SEED` (decimal or `0x` hex) replays a run, `HOSTILE_CASES` sets
//! the number of cases per scenario (default 256). A failing case is shrunk
//! (proptest's value trees, driven by hand since the checks are async) and
//! reported with the seed.

mod cases;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use tower::ServiceExt;

use self::cases::{
    account_cases, percent_encode, push_token_cases, serial_cases, Auth, Case, Target, REFLASH,
    TOKEN, USER, VICTIM,
};
use crate::support::api::{push_token, FAMILIES, PASSWORD};
use crate::support::openapi::assert_documented;
use crate::support::{every_backend, TestApp};

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    lists: Vec<Value>,
    victim_lists: Vec<Value>,
    users: String,
    sessions: i64,
}

/// A server with the caller and the victim, each holding rows in both
/// families.
struct World {
    app: TestApp,
    token: String,
    reflash_key: String,
    victim_token: String,
}

fn seed_rows(n: u32) -> Vec<(usize, i64, Value)> {
    vec![
        (
            0,
            1,
            json!({ "push_token": push_token(n), "language": "en", "os": "ANDROID",
                    "push_platform": "FCM", "phone_model": "phone:Xiaomi/App:钉钉智能_1.0.0" }),
        ),
        (
            0,
            7,
            json!({ "push_token": push_token(n + 1), "language": "zh", "dev": 1 }),
        ),
        (
            1,
            2,
            json!({ "push_token": push_token(n), "language": "en", "bundleid": "a.b" }),
        ),
    ]
}

impl World {
    async fn new(app: TestApp) -> World {
        // The rate limits would refuse the many logins these checks make;
        // they have tests of their own.
        let app = app
            .with_flags(&["--auth-rate-per-minute", "0", "--login-max-failures", "0"])
            .await;
        let victim = app.user(VICTIM).await;
        for (family, serial, body) in seed_rows(1000) {
            let uri = format!("{}/{serial}", FAMILIES[family]);
            let reply = app.put(&uri, &victim.token, body).await;
            assert!(reply.status.is_success(), "{:?}", reply.body);
        }
        let user = app.user(USER).await;
        let mut world = World {
            app,
            token: user.token,
            reflash_key: user.reflash_key,
            victim_token: victim.token,
        };
        world.restore().await;
        world
    }

    /// A fresh session for the caller and their rows as seeded.
    async fn restore(&mut self) {
        let reply = self.app.login(USER, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        self.token = reply.body["token"].as_str().unwrap().to_owned();
        self.reflash_key = reply.body["reflash_key"].as_str().unwrap().to_owned();
        for base in FAMILIES {
            let reply = self.app.delete(base, &self.token).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        }
        for (family, serial, body) in seed_rows(1) {
            let uri = format!("{}/{serial}", FAMILIES[family]);
            let reply = self.app.put(&uri, &self.token, body).await;
            assert!(reply.status.is_success(), "{:?}", reply.body);
        }
    }

    async fn lists(&self, token: &str) -> Result<Vec<Value>, String> {
        let mut lists = Vec::new();
        for base in FAMILIES {
            let reply = self.app.get(base, token).await;
            if reply.status != StatusCode::OK {
                return Err(format!(
                    "GET {base} answered {} {}",
                    reply.status, reply.body
                ));
            }
            lists.push(reply.body);
        }
        Ok(lists)
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        let store = &self.app.state.store;
        Ok(Snapshot {
            lists: self.lists(&self.token).await?,
            victim_lists: self.lists(&self.victim_token).await?,
            users: format!("{:?}", store.list_users().await.map_err(|e| e.to_string())?),
            sessions: store
                .count_active_sessions(pushtoken::unix_now())
                .await
                .map_err(|e| e.to_string())?,
        })
    }

    fn substitute(&self, bytes: &[u8]) -> Vec<u8> {
        let text = bytes.escape_ascii().to_string();
        if !text.contains("<<") {
            return bytes.to_vec();
        }
        let mut out = bytes.to_vec();
        for (from, to) in [(TOKEN, &self.token), (REFLASH, &self.reflash_key)] {
            out = replace(&out, from.as_bytes(), to.as_bytes());
        }
        out
    }

    fn request(&self, case: &Case) -> Request<Body> {
        let (method, path) = match &case.target {
            Target::SignUp => (Method::POST, "/v1/api/user".to_owned()),
            Target::Login => (Method::POST, "/v1/api/user/login".to_owned()),
            Target::Logout => (Method::POST, "/v1/api/user/logout".to_owned()),
            Target::Refresh => (Method::POST, "/v1/api/user/refresh".to_owned()),
            Target::Post(f) => (Method::POST, FAMILIES[*f].to_owned()),
            Target::Put(f, s) => (Method::PUT, format!("{}/{}", FAMILIES[*f], s)),
            Target::Delete(f, s) => (Method::DELETE, format!("{}/{}", FAMILIES[*f], s)),
        };
        // A segment that is no valid URI could not reach the router over the
        // wire (the HTTP parser refuses it); send it percent-encoded instead.
        let path = match path.parse::<Uri>() {
            Ok(uri) if uri.path() == path => path,
            _ => match &case.target {
                Target::Put(f, s) | Target::Delete(f, s) => {
                    format!("{}/{}", FAMILIES[*f], percent_encode(s))
                }
                _ => unreachable!("fixed paths are valid"),
            },
        };
        let mut builder = Request::builder().method(method).uri(path);
        match &case.auth {
            Auth::Token => builder = builder.header("token", &self.token),
            Auth::Bearer => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            }
            Auth::None => {}
            Auth::Forged(value) => builder = builder.header("token", value),
        }
        if let Some(bytes) = &case.bundleid {
            builder = builder.header("bundleid", HeaderValue::from_bytes(bytes).unwrap());
        }
        if let Some(value) = case.content_type {
            builder = builder.header(header::CONTENT_TYPE, value);
        }
        builder
            .body(Body::from(self.substitute(&case.body)))
            .expect("a well-formed request")
    }

    /// Sends `case` and checks every property; leaves the world usable.
    async fn check(&mut self, case: &Case) -> Result<String, String> {
        let before = self.snapshot().await?;
        let request = self.request(case);
        let (method, uri) = (request.method().clone(), request.uri().to_string());
        let response = AssertUnwindSafe(self.app.router().oneshot(request));
        let response = futures_util::FutureExt::catch_unwind(response)
            .await
            .map_err(|_| "the router panicked".to_owned())?
            .expect("router is infallible");
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
            .to_bytes();
        let said = || format!("{method} {uri} answered {status} {}", bytes.escape_ascii());
        if status.is_server_error() {
            return Err(format!("server error: {}", said()));
        }
        if !(status.is_success() || status.is_client_error()) {
            return Err(format!("unexpected status: {}", said()));
        }
        let json: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("not JSON: {}", said()))?;
        if !json["message"].is_string() {
            return Err(format!("no message string: {}", said()));
        }
        if !content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
        {
            return Err(format!("content-type {content_type:?}: {}", said()));
        }
        // `{family}/` (an empty serial) matches no route: the JSON 404, which
        // the document's `{serial}` template would wrongly claim.
        let unrouted = uri.ends_with('/') && status == StatusCode::NOT_FOUND;
        let documented = unrouted
            || std::panic::catch_unwind(|| assert_documented(&method, &uri, status, &json)).is_ok();
        if !documented {
            return Err(format!("status not in openapi.yaml: {}", said()));
        }

        if status.is_client_error() {
            let after = self
                .snapshot()
                .await
                .map_err(|e| format!("after {}, the caller's session broke: {e}", said()))?;
            if after != before {
                return Err(format!(
                    "a refused request changed data: {}\nbefore: {before:?}\nafter: {after:?}",
                    said()
                ));
            }
            let login = self.app.login(USER, PASSWORD).await;
            if login.status != StatusCode::CREATED {
                return Err(format!(
                    "after {}, login answers {} {}",
                    said(),
                    login.status,
                    login.body
                ));
            }
        } else {
            let victim = self.lists(&self.victim_token).await?;
            if victim != before.victim_lists {
                return Err(format!(
                    "{} changed another user's rows: {victim:?}",
                    said()
                ));
            }
            self.restore().await;
        }
        Ok(format!(
            "{} {}",
            status.as_u16(),
            json["message"].as_str().unwrap_or_default()
        ))
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn seed() -> u64 {
    match std::env::var("HOSTILE_SEED") {
        Ok(text) => {
            let text = text.trim();
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            }
            .expect("HOSTILE_SEED is a number")
        }
        Err(_) => rand::random(),
    }
}

fn case_count() -> usize {
    std::env::var("HOSTILE_CASES")
        .ok()
        .map(|n| n.parse().expect("HOSTILE_CASES is a number"))
        .unwrap_or(256)
}

/// Runs `cases` generated cases; on a failure shrinks it and panics with
/// the smallest failing case found and the seed that replays the run.
async fn run_property(app: TestApp, name: &str, strategy: BoxedStrategy<Case>) {
    let seed = seed();
    let cases = case_count();
    eprintln!("{name}: HOSTILE_SEED={seed:#x}, {cases} cases");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut world = World::new(app).await;
    let started = Instant::now();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..cases {
        let mut tree = strategy.new_tree(&mut runner).expect("a case");
        let first = tree.current();
        let error = match world.check(&first).await {
            Ok(answer) => {
                *answers.entry(answer).or_default() += 1;
                continue;
            }
            Err(error) => error,
        };
        world.restore().await;
        let (mut smallest, mut why) = (first.clone(), error.clone());
        let mut steps = 0;
        let mut more = tree.simplify();
        while more && steps < 300 {
            steps += 1;
            let candidate = tree.current();
            match world.check(&candidate).await {
                Err(e) => {
                    world.restore().await;
                    (smallest, why) = (candidate, e);
                    more = tree.simplify();
                }
                Ok(_) => more = tree.complicate(),
            }
        }
        panic!(
            "{name}: case {i} of HOSTILE_SEED={seed:#x} failed: {error}\n  case: {first:?}\n\
             shrunk in {steps} steps to: {why}\n  case: {smallest:?}"
        );
    }
    eprintln!(
        "{name}: {cases} cases passed in {:?}; answers: {answers:?}",
        started.elapsed()
    );
}

#[every_backend]
async fn hostile_account_bodies_never_crash_and_refusals_change_nothing(app: TestApp) {
    run_property(app, "account bodies", account_cases()).await;
}

#[every_backend]
async fn hostile_push_token_bodies_never_crash_and_refusals_change_nothing(app: TestApp) {
    run_property(app, "push-token bodies", push_token_cases()).await;
}

#[every_backend]
async fn hostile_serials_never_crash_and_refusals_change_nothing(app: TestApp) {
    run_property(app, "serials", serial_cases()).await;
}
