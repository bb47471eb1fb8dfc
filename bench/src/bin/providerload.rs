//! Provider-push load for pushtoken: notify throughput and delivery latency
//! to an APNs stand-in and an FCM stand-in, and the connections the server
//! opens to them.
//!
//!   providerload run --dir DIR --url URL --apikey KEY --key NOTIFY_KEY
//!                    [--providers "apns fcm"] [--users N] [--notifiers C]
//!                    [--duration SECS] [--rounds R] [--prefix P]
//!                    [--max-secs S]
//!
//! It starts, in this process, on loopback:
//!
//! - an APNs stand-in: HTTPS with HTTP/2 (ALPN `h2`, and `http/1.1`
//!   offered beside it), two listeners, one for production (`dev` 0) and
//!   one for the sandbox (`dev` 1), answering 200 and an `apns-id` to
//!   `POST /3/device/<token>` with a `bearer` JWT;
//! - an FCM stand-in: the same TLS and protocols, answering `POST
//!   /v1/projects/<id>/messages:send` with `Bearer bench-access-1` by 200
//!   `{"name": "projects/<id>/messages/<n>"}`;
//! - an OAuth token endpoint on a listener of its own (as Google's is on
//!   another host than FCM's), answering `POST /token` with `{"access_token":
//!   "bench-access-1", "expires_in": 3600, "token_type": "Bearer"}`.
//!
//! All of them present a certificate for 127.0.0.1 issued by a CA made for
//! the run (rcgen), whose PEM is written to `DIR/ca.pem`. Beside it go an
//! APNs .p8 key (P-256, made for the run) and an FCM service-account file
//! (the test suite's RSA key, `tests/api/fixtures`), and `DIR/server.env`:
//! the server's settings, `VAR=value` one a line (written last, by rename,
//! so that its presence means the stand-ins listen). The caller starts the
//! server with them (and the notify key), and may write the server's pid
//! to `DIR/server.pid` for its CPU time; this waits for `URL/healthz`.
//!
//! Each stand-in counts TCP connections accepted, TLS handshakes that
//! failed, connections open (now and at most), and per connection the
//! protocol and the requests and pushes it carried. Each push's `seq` (a
//! key of the event, so at the top of the APNs payload and in FCM's
//! `data`, as text) is looked up when the request's body has been read:
//! delivery latency runs from just before the notify is written to then.
//!
//! For each provider it signs up N users (`POST /v1/api/user` with the API
//! key, then login) and gives each one ring row at serial 1 (`PUT
//! /v1/api/user/token/1`): APNs rows are a 64-hex `push_token` with `dev`
//! alternating 0 and 1 and a `bundleid`; FCM rows an `os_token` with
//! `push_platform` FCM. C keep-alive HTTP/1.1 connections then send `POST
//! /v1/api/notify` (ring, ttl 30, a unique `seq`, each to the next user in
//! turn): R closed-loop runs, then R runs paced at half their median rate
//! (open loop; a notifier behind its schedule counts from the scheduled
//! time). After each run it waits up to 5 s for the pushes still on their
//! way: an accepted notify whose push never came is `lost`. A 202 whose
//! `providers.<p>.sent` is not 1 is `not_sent`.
//!
//! One JSON line per run on stdout, with the connections opened during the
//! run, open at its end, opened since the server started, and those that
//! carried its pushes (and the most pushes one carried); the CPU time of
//! the server and of this process (the notifiers and the stand-ins) per
//! notify. Every wait is bounded; the whole run ends by `--max-secs`
//! (default 900).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pushtoken_bench::{histogram, max_ms, micros, ms, Args, Http};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The FCM service account's key: the test suite's.
const FCM_KEY: &str = include_str!("../../../tests/api/fixtures/fcm-service-account-key.pem");
const PROJECT: &str = "pushtoken-bench";
const ACCESS_TOKEN: &str = "bench-access-1";
const APNS_KEY_ID: &str = "BENCHKEY01";
const APNS_TEAM_ID: &str = "BENCHTEAM1";

/// Longest wait for the server to answer /healthz.
const SERVER_WITHIN: Duration = Duration::from_secs(60);
/// Longest wait for one HTTP exchange with the server.
/// Longest wait for a stand-in's TLS handshake.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);
/// Longest wait, after the last notify, for the pushes still on their way.
const DRAIN_WITHIN: Duration = Duration::from_secs(5);
/// Notifies per run at most (the stamp table's size).
const MAX_PER_RUN: u64 = 500_000;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() - 1) / 2]
}

// ---------------------------------------------------------------------------
// What the notifiers and the stand-ins share.

struct Shared {
    /// Per `seq`: microseconds since `epoch` + 1 when its latency starts;
    /// 0 before it is sent, once its push has come, or when it was refused.
    stamps: Vec<AtomicU64>,
    epoch: Instant,
    next_seq: AtomicU64,
    /// Pushes that matched a stamp (each `seq` once).
    received: AtomicU64,
    /// Pushes for a `seq` already received, refused, or never sent.
    duplicates: AtomicU64,
    /// Pushes without a `seq`.
    unknown: AtomicU64,
    /// Delivery latencies of the current run, microseconds.
    delivery: Mutex<Histogram<u64>>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn arrived(&self, seq: Option<u64>, now: u64) {
        let Some(stamp) = seq.and_then(|s| self.stamps.get(s as usize)) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let sent = stamp.swap(0, Ordering::AcqRel);
        if sent == 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let latency = now.saturating_sub(sent - 1).clamp(1, 60_000_000);
        let _ = self.delivery.lock().expect("histogram").record(latency);
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The stand-ins.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Apns,
    Fcm,
    OAuth,
}

/// One accepted connection.
#[derive(Default)]
struct Conn {
    h2: AtomicBool,
    requests: AtomicU64,
    pushes: AtomicU64,
}

/// One listener of a stand-in (a host, as the server's pool sees it).
struct Host {
    name: &'static str,
    role: Role,
    url: String,
    accepted: AtomicU64,
    tls_failures: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    /// Requests answered other than 200 (wrong path or credentials).
    refused: AtomicU64,
    conns: Mutex<Vec<Arc<Conn>>>,
}

impl Host {
    async fn start(
        name: &'static str,
        role: Role,
        tls: TlsAcceptor,
        shared: Arc<Shared>,
    ) -> Result<Arc<Host>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let host = Arc::new(Host {
            name,
            role,
            url: format!("https://{}", listener.local_addr()?),
            accepted: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            open: AtomicU64::new(0),
            max_open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
        });
        tokio::spawn(accept(listener, tls, host.clone(), shared));
        Ok(host)
    }

    fn snapshot(&self) -> HostSnapshot {
        let conns = self.conns.lock().expect("conns");
        HostSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            pushes: conns
                .iter()
                .map(|c| c.pushes.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

async fn accept(listener: TcpListener, tls: TlsAcceptor, host: Arc<Host>, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        host.accepted.fetch_add(1, Ordering::Relaxed);
        let open = host.open.fetch_add(1, Ordering::Relaxed) + 1;
        host.max_open.fetch_max(open, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        host.conns.lock().expect("conns").push(conn.clone());
        let (tls, host, shared) = (tls.clone(), host.clone(), shared.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_WITHIN, tls.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                    conn.h2.store(h2, Ordering::Relaxed);
                    let io = TokioIo::new(stream);
                    let service = {
                        let (host, conn) = (host.clone(), conn.clone());
                        hyper::service::service_fn(move |request| {
                            answer(request, host.clone(), conn.clone(), shared.clone())
                        })
                    };
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    };
                }
                _ => {
                    host.tls_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            host.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn reply(status: StatusCode, headers: &[(&str, &str)], body: String) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("a response")
}

/// A stand-in's answer to one request.
async fn answer(
    request: Request<Incoming>,
    host: Arc<Host>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let now = shared.now_us();
    conn.requests.fetch_add(1, Ordering::Relaxed);
    let path = parts.uri.path();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json_type = [("content-type", "application/json")];
    let post = parts.method == Method::POST;
    let response = match host.role {
        Role::Apns if post && path.starts_with("/3/device/") => {
            if !authorization.starts_with("bearer ") {
                host.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(reply(
                    StatusCode::FORBIDDEN,
                    &json_type,
                    json!({"reason": "MissingProviderToken"}).to_string(),
                ));
            }
            let seq = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("seq")?.as_u64());
            conn.pushes.fetch_add(1, Ordering::Relaxed);
            shared.arrived(seq, now);
            let id = format!("{:08X}-0000-0000-0000-{:012X}", seq.unwrap_or(0), now);
            reply(StatusCode::OK, &[("apns-id", id.as_str())], String::new())
        }
        Role::Fcm
            if post && path.starts_with("/v1/projects/") && path.ends_with("/messages:send") =>
        {
            if authorization != format!("Bearer {ACCESS_TOKEN}") {
                host.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(reply(
                    StatusCode::UNAUTHORIZED,
                    &json_type,
                    json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}).to_string(),
                ));
            }
            let seq = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["message"]["data"]["seq"].as_str()?.parse().ok());
            let n = conn.pushes.fetch_add(1, Ordering::Relaxed);
            shared.arrived(seq, now);
            let project = path
                .trim_start_matches("/v1/projects/")
                .trim_end_matches("/messages:send");
            let name = format!("projects/{project}/messages/{}", seq.unwrap_or(n));
            reply(
                StatusCode::OK,
                &json_type,
                json!({ "name": name }).to_string(),
            )
        }
        Role::OAuth if post && path == "/token" => reply(
            StatusCode::OK,
            &json_type,
            json!({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})
                .to_string(),
        ),
        _ => {
            host.refused.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::NOT_FOUND, &json_type, "{}".into())
        }
    };
    Ok(response)
}

struct HostSnapshot {
    accepted: u64,
    /// Pushes carried so far, per connection (in the order accepted).
    pushes: Vec<u64>,
}

/// One host's connections during one run.
#[derive(Serialize, Default, Clone)]
struct HostRun {
    /// TCP connections accepted during the run.
    opened: u64,
    /// Connections that carried at least one of the run's pushes.
    carrying: u64,
    /// The most pushes one connection carried during the run.
    most_on_one: u64,
    pushes: u64,
    /// Since the stand-in started (the server started after it).
    opened_total: u64,
    h2_total: u64,
    tls_failures_total: u64,
    open_at_end: u64,
    max_open: u64,
    /// Requests ever answered other than 200.
    refused_total: u64,
    requests_total: u64,
}

fn host_run(host: &Host, before: &HostSnapshot, after: &HostSnapshot) -> HostRun {
    let deltas: Vec<u64> = after
        .pushes
        .iter()
        .enumerate()
        .map(|(i, &n)| n - before.pushes.get(i).copied().unwrap_or(0))
        .collect();
    let conns = host.conns.lock().expect("conns");
    HostRun {
        opened: after.accepted - before.accepted,
        carrying: deltas.iter().filter(|&&d| d > 0).count() as u64,
        most_on_one: deltas.iter().copied().max().unwrap_or(0),
        pushes: deltas.iter().sum(),
        opened_total: after.accepted,
        h2_total: conns
            .iter()
            .filter(|c| c.h2.load(Ordering::Relaxed))
            .count() as u64,
        tls_failures_total: host.tls_failures.load(Ordering::Relaxed),
        open_at_end: host.open.load(Ordering::Relaxed),
        max_open: host.max_open.load(Ordering::Relaxed),
        refused_total: host.refused.load(Ordering::Relaxed),
        requests_total: conns
            .iter()
            .map(|c| c.requests.load(Ordering::Relaxed))
            .sum(),
    }
}

struct StandIns {
    apns: Arc<Host>,
    apns_sandbox: Arc<Host>,
    fcm: Arc<Host>,
    oauth: Arc<Host>,
}

impl StandIns {
    fn hosts(&self, provider: Provider) -> Vec<&Arc<Host>> {
        match provider {
            Provider::Apns => vec![&self.apns, &self.apns_sandbox],
            Provider::Fcm => vec![&self.fcm, &self.oauth],
        }
    }
}

/// A CA made for the run, and a certificate for 127.0.0.1 it issued: the
/// stand-ins' TLS, and the CA's PEM.
fn tls_of_a_new_ca() -> Result<(TlsAcceptor, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "pushtoken bench stand-in CA");
    let ca = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&key, &ca, &ca_key)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca.pem()))
}

/// Starts the stand-ins and writes the server's settings under `dir`.
async fn start_standins(dir: &Path, shared: &Arc<Shared>) -> Result<StandIns> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (tls, ca_pem) = tls_of_a_new_ca()?;
    let standins = StandIns {
        apns: Host::start("apns", Role::Apns, tls.clone(), shared.clone()).await?,
        apns_sandbox: Host::start("apns-sandbox", Role::Apns, tls.clone(), shared.clone()).await?,
        fcm: Host::start("fcm", Role::Fcm, tls.clone(), shared.clone()).await?,
        oauth: Host::start("fcm-oauth", Role::OAuth, tls, shared.clone()).await?,
    };
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem)?;
    let p8 = dir.join(format!("AuthKey_{APNS_KEY_ID}.p8"));
    std::fs::write(&p8, rcgen::KeyPair::generate()?.serialize_pem())?;
    let account = dir.join("fcm-service-account.json");
    let account_json = json!({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "bench-key-1",
        "private_key": FCM_KEY, "client_email": format!("pushtoken@{PROJECT}.iam.gserviceaccount.com"),
        "token_uri": format!("{}/token", standins.oauth.url),
    });
    std::fs::write(&account, account_json.to_string())?;
    let settings = [
        ("PUSHTOKEN_PROVIDER_CA_FILE", path_text(&ca_file)?),
        ("PUSHTOKEN_APNS_KEY_FILE", path_text(&p8)?),
        ("PUSHTOKEN_APNS_KEY_ID", APNS_KEY_ID.to_owned()),
        ("PUSHTOKEN_APNS_TEAM_ID", APNS_TEAM_ID.to_owned()),
        ("PUSHTOKEN_APNS_URL", standins.apns.url.clone()),
        (
            "PUSHTOKEN_APNS_SANDBOX_URL",
            standins.apns_sandbox.url.clone(),
        ),
        ("PUSHTOKEN_FCM_CREDENTIALS", path_text(&account)?),
        ("PUSHTOKEN_FCM_URL", standins.fcm.url.clone()),
    ];
    let text: String = settings
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect();
    let env = dir.join("server.env");
    let partial = dir.join("server.env.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &env)?;
    eprintln!(
        "providerload: stand-ins listening (apns {}, sandbox {}, fcm {}, oauth {}); settings in {}",
        standins.apns.url,
        standins.apns_sandbox.url,
        standins.fcm.url,
        standins.oauth.url,
        env.display()
    );
    Ok(standins)
}

/// A path as a settings value (no whitespace: the caller splits words).
fn path_text(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
    if text.chars().any(char::is_whitespace) {
        bail!("{text}: a path with whitespace cannot be passed as a VAR=value word");
    }
    Ok(text.to_owned())
}

// ---------------------------------------------------------------------------
// HTTP to the server.

async fn wait_healthy(url: &str) -> Result<()> {
    let began = Instant::now();
    loop {
        let mut http = Http::new(url)?;
        if let Ok((StatusCode::OK, _)) = http.send(Method::GET, "/healthz", &[], None).await {
            return Ok(());
        }
        if began.elapsed() > SERVER_WITHIN {
            bail!("no answer from {url}/healthz within {SERVER_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Users and their rows.

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Provider {
    Apns,
    Fcm,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
        }
    }

    /// The ring row of user `i`.
    fn row(self, i: usize) -> Value {
        match self {
            Provider::Apns => json!({
                "push_token": format!("{:032x}{:032x}", 0xa9e5_u128, i),
                "language": "en", "dev": i % 2, "bundleid": "com.example.doorbell",
            }),
            Provider::Fcm => json!({
                "push_token": format!("{:032x}{:032x}", 0xfc3_u128, i),
                "language": "en", "os_token": format!("fcm-bench-registration-token-{i:06}"),
                "push_platform": "FCM", "os": "ANDROID",
            }),
        }
    }
}

/// Signs up and logs in `n` users, 8 at a time, and gives each its ring
/// row for `provider`: their usernames.
async fn setup_users(
    url: &str,
    apikey: &str,
    prefix: &str,
    provider: Provider,
    n: usize,
) -> Result<Vec<String>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8.min(n) {
        let mut http = Http::new(url)?;
        let (apikey, prefix, next) = (apikey.to_owned(), prefix.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    break;
                }
                let username = format!("{prefix}_{}_{i:05}", provider.name());
                let password = format!("pw_{i:06}_x");
                let session = http
                    .sign_up_and_log_in(&username, &password, &apikey)
                    .await?;
                let (s, b) = http
                    .send(
                        Method::PUT,
                        "/v1/api/user/token/1",
                        &[("token", session.as_str())],
                        Some(provider.row(i).to_string()),
                    )
                    .await?;
                if !s.is_success() {
                    bail!("the row of {username}: {s} {}", String::from_utf8_lossy(&b));
                }
                made.push((i, username));
            }
            Ok::<_, anyhow::Error>(made)
        }));
    }
    let mut users = Vec::with_capacity(n);
    for t in tasks {
        users.extend(t.await??);
    }
    users.sort();
    Ok(users.into_iter().map(|(_, name)| name).collect())
}

// ---------------------------------------------------------------------------
// Notifiers.

struct NotifierResult {
    answers: Histogram<u64>,
    accepted: u64,
    errors: u64,
    not_sent: u64,
}

struct RunPlan {
    provider: Provider,
    usernames: Vec<String>,
    authorization: String,
    start: Instant,
    duration: Duration,
    interval: Option<Duration>,
    /// The run's first `seq` and the bound of its `seq`s.
    first_seq: u64,
    seq_bound: u64,
}

static ERRORS_SHOWN: AtomicU64 = AtomicU64::new(0);

async fn notifier(
    mut http: Http,
    index: usize,
    plan: Arc<RunPlan>,
    shared: Arc<Shared>,
) -> Result<NotifierResult> {
    let mut answers = histogram()?;
    let (mut accepted, mut errors, mut not_sent) = (0u64, 0u64, 0u64);
    let deadline = plan.start + plan.duration;
    let offset = (index as f64 * 0.618).fract();
    let mut k: u64 = 0;
    loop {
        let scheduled = match plan.interval {
            Some(iv) => {
                let at = plan.start + iv.mul_f64(k as f64 + offset);
                if at >= deadline {
                    break;
                }
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                    // On time: count from the wake (tokio's timers round a
                    // wait up to the next millisecond).
                    Instant::now().max(at)
                } else {
                    // Behind schedule: count from the scheduled time.
                    at
                }
            }
            None => Instant::now(),
        };
        k += 1;
        if Instant::now() >= deadline {
            break;
        }
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        if seq >= plan.seq_bound {
            break;
        }
        let Some(stamp) = shared.stamps.get(seq as usize) else {
            break;
        };
        let n = (seq - plan.first_seq) as usize;
        let user = &plan.usernames[n % plan.usernames.len()];
        let body = json!({
            "user": user, "family": "ring", "ttl": 30,
            "event": {"type": "1", "uid": format!("BENCH-DOORBELL-{}", n % plan.usernames.len()),
                      "message": "bench", "seq": seq},
        })
        .to_string();
        let from_epoch = scheduled
            .saturating_duration_since(shared.epoch)
            .as_micros() as u64;
        stamp.store(from_epoch + 1, Ordering::Release);
        let result = http
            .send(
                Method::POST,
                "/v1/api/notify",
                &[("authorization", plan.authorization.as_str())],
                Some(body),
            )
            .await;
        let took = scheduled.elapsed();
        match result {
            Ok((StatusCode::ACCEPTED, answer)) => {
                let _ = answers.record(micros(took));
                accepted += 1;
                let v = serde_json::from_slice::<Value>(&answer).unwrap_or(Value::Null);
                let sent = v["providers"][plan.provider.name()]["sent"].as_u64();
                if sent != Some(1) || v["delivered"].as_u64() != Some(1) {
                    not_sent += 1;
                    if ERRORS_SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("notify {seq}: {}", String::from_utf8_lossy(&answer));
                    }
                }
            }
            other => {
                // Not accepted: never counted as lost (a push that came
                // anyway counts as a duplicate).
                stamp.store(0, Ordering::Release);
                errors += 1;
                if ERRORS_SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
                    match other {
                        Ok((s, b)) => {
                            eprintln!("notify {seq}: {s} {}", String::from_utf8_lossy(&b))
                        }
                        Err(e) => eprintln!("notify {seq}: {e:#}"),
                    }
                }
            }
        }
    }
    Ok(NotifierResult {
        answers,
        accepted,
        errors,
        not_sent,
    })
}

/// CPU time (user + system) of a process, in milliseconds.
fn cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, in parentheses, which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) * 1000.0 / ticks)
}

#[derive(Serialize)]
struct RunSummary {
    scenario: &'static str,
    provider: Provider,
    label: String,
    round: usize,
    users: usize,
    notifiers: usize,
    target_rate: f64,
    secs: f64,
    /// Notifies answered 202, per second.
    rps: f64,
    /// Pushes the stand-in received while the notifiers ran, per second.
    pushes_per_sec: f64,
    accepted: u64,
    /// Notifies not answered 202 (or not at all in time).
    errors: u64,
    /// 202s whose `providers.<p>.sent` (or `delivered`) was not 1.
    not_sent: u64,
    received: u64,
    lost: u64,
    /// Pushes of a `seq` already received, refused, or never sent.
    duplicates: u64,
    /// Pushes without a `seq`.
    unknown: u64,
    /// Delivery: notify written → push request read by the stand-in.
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The notify's own answer (after the provider's verdict).
    answer_p50_ms: f64,
    answer_p99_ms: f64,
    answer_max_ms: f64,
    connect_max_ms: f64,
    /// The provider's connections (its push hosts; FCM's token endpoint
    /// apart).
    conns_opened: u64,
    conns_carrying: u64,
    conns_opened_total: u64,
    conns_open_at_end: u64,
    pushes_per_conn: f64,
    most_on_one_conn: u64,
    hosts: std::collections::BTreeMap<&'static str, HostRun>,
    /// CPU time per accepted notify, ms: the server's, and this process's
    /// (notifiers and stand-ins).
    server_cpu_ms_per_notify: Option<f64>,
    bench_cpu_ms_per_notify: Option<f64>,
    /// This process's CPU time over the run's wall time (1.0: one core).
    bench_cpu_share: Option<f64>,
    /// The 1-minute load average at the run's end.
    load: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    url: &str,
    key: &str,
    provider: Provider,
    usernames: &[String],
    notifiers: usize,
    duration: Duration,
    rate: f64,
    label: &str,
    round: usize,
    shared: &Arc<Shared>,
    standins: &StandIns,
    server_pid: Option<&str>,
) -> Result<RunSummary> {
    // Every notifier's connection open before the clock starts.
    let mut https = Vec::with_capacity(notifiers);
    let mut connect_max = Duration::ZERO;
    for _ in 0..notifiers {
        let mut http = Http::new(url)?;
        let began = Instant::now();
        http.connect().await?;
        connect_max = connect_max.max(began.elapsed());
        https.push(http);
    }
    let hosts = standins.hosts(provider);
    let before: Vec<HostSnapshot> = hosts.iter().map(|h| h.snapshot()).collect();
    shared.delivery.lock().expect("histogram").reset();
    let first_seq = shared.next_seq.load(Ordering::Relaxed);
    let seq_bound = (first_seq + MAX_PER_RUN).min(shared.stamps.len() as u64);
    let (received0, duplicates0, unknown0) = (
        shared.received.load(Ordering::Relaxed),
        shared.duplicates.load(Ordering::Relaxed),
        shared.unknown.load(Ordering::Relaxed),
    );
    let server_cpu0 = server_pid.and_then(cpu_ms);
    let bench_cpu0 = cpu_ms("self");
    let plan = Arc::new(RunPlan {
        provider,
        usernames: usernames.to_vec(),
        authorization: format!("Bearer {key}"),
        start: Instant::now(),
        duration,
        interval: (rate > 0.0).then(|| Duration::from_secs_f64(notifiers as f64 / rate)),
        first_seq,
        seq_bound,
    });
    let tasks: Vec<_> = https
        .into_iter()
        .enumerate()
        .map(|(i, http)| tokio::spawn(notifier(http, i, plan.clone(), shared.clone())))
        .collect();
    let mut answers = histogram()?;
    let (mut accepted, mut errors, mut not_sent) = (0, 0, 0);
    for t in tasks {
        let r = t.await??;
        answers.add(&r.answers)?;
        accepted += r.accepted;
        errors += r.errors;
        not_sent += r.not_sent;
    }
    let secs = plan.start.elapsed().as_secs_f64();
    let server_cpu1 = server_pid.and_then(cpu_ms);
    let bench_cpu1 = cpu_ms("self");
    let received_in_time = shared.received.load(Ordering::Relaxed) - received0;
    let waiting = Instant::now();
    while shared.received.load(Ordering::Relaxed) - received0 < accepted
        && waiting.elapsed() < DRAIN_WITHIN
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after: Vec<HostSnapshot> = hosts.iter().map(|h| h.snapshot()).collect();
    let sent_to = shared.next_seq.load(Ordering::Relaxed).min(seq_bound);
    // A stamp still set: accepted, and its push never came.
    let lost = (first_seq..sent_to)
        .filter(|&seq| shared.stamps[seq as usize].load(Ordering::Acquire) != 0)
        .count() as u64;
    shared.next_seq.store(sent_to, Ordering::Relaxed);
    let delivery = shared.delivery.lock().expect("histogram").clone();
    let runs: std::collections::BTreeMap<&'static str, HostRun> = hosts
        .iter()
        .zip(before.iter().zip(after.iter()))
        .map(|(h, (b, a))| (h.name, host_run(h, b, a)))
        .collect();
    let push_hosts: Vec<&HostRun> = hosts
        .iter()
        .filter(|h| h.role != Role::OAuth)
        .map(|h| &runs[h.name])
        .collect();
    let sum = |f: fn(&HostRun) -> u64| push_hosts.iter().map(|r| f(r)).sum::<u64>();
    let carrying = sum(|r| r.carrying);
    let pushes = sum(|r| r.pushes);
    let per_notify = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if accepted > 0 => Some((b - a) / accepted as f64),
        _ => None,
    };
    Ok(RunSummary {
        scenario: "provider-notify",
        provider,
        label: label.to_owned(),
        round,
        users: usernames.len(),
        notifiers,
        target_rate: rate,
        secs,
        rps: accepted as f64 / secs,
        pushes_per_sec: received_in_time as f64 / secs,
        accepted,
        errors,
        not_sent,
        received: shared.received.load(Ordering::Relaxed) - received0,
        lost,
        duplicates: shared.duplicates.load(Ordering::Relaxed) - duplicates0,
        unknown: shared.unknown.load(Ordering::Relaxed) - unknown0,
        p50_ms: ms(&delivery, 0.5),
        p90_ms: ms(&delivery, 0.9),
        p99_ms: ms(&delivery, 0.99),
        max_ms: max_ms(&delivery),
        answer_p50_ms: ms(&answers, 0.5),
        answer_p99_ms: ms(&answers, 0.99),
        answer_max_ms: max_ms(&answers),
        connect_max_ms: connect_max.as_secs_f64() * 1000.0,
        conns_opened: sum(|r| r.opened),
        conns_carrying: carrying,
        conns_opened_total: sum(|r| r.opened_total),
        conns_open_at_end: sum(|r| r.open_at_end),
        pushes_per_conn: if carrying > 0 {
            pushes as f64 / carrying as f64
        } else {
            0.0
        },
        most_on_one_conn: push_hosts.iter().map(|r| r.most_on_one).max().unwrap_or(0),
        hosts: runs,
        server_cpu_ms_per_notify: per_notify(server_cpu0, server_cpu1),
        bench_cpu_ms_per_notify: per_notify(bench_cpu0, bench_cpu1),
        bench_cpu_share: match (bench_cpu0, bench_cpu1) {
            (Some(a), Some(b)) => Some((b - a) / 1000.0 / secs),
            _ => None,
        },
        load: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok()),
    })
}

async fn run(args: &Args) -> Result<()> {
    let dir = PathBuf::from(args.req("dir")?);
    let url = args.req("url")?.to_owned();
    let apikey = args.req("apikey")?.to_owned();
    let key = args.req("key")?.to_owned();
    let providers: Vec<Provider> = args
        .get("providers")
        .unwrap_or("apns fcm")
        .split_whitespace()
        .map(|p| match p {
            "apns" => Ok(Provider::Apns),
            "fcm" => Ok(Provider::Fcm),
            other => Err(anyhow!("unknown provider {other} (apns, fcm)")),
        })
        .collect::<Result<_>>()?;
    let users: usize = args.num("users", 64)?;
    let notifiers: usize = args.num("notifiers", 32)?;
    let duration = Duration::from_secs_f64(args.num("duration", 5.0)?);
    let rounds: usize = args.num("rounds", 3)?;
    let prefix = args.get("prefix").unwrap_or("prov").to_owned();
    if users == 0 || notifiers == 0 || rounds == 0 {
        bail!("--users, --notifiers and --rounds must be at least 1");
    }

    let runs = providers.len() as u64 * rounds as u64 * 2;
    let shared = Arc::new(Shared {
        stamps: (0..(runs * MAX_PER_RUN).min(4_000_000))
            .map(|_| AtomicU64::new(0))
            .collect(),
        epoch: Instant::now(),
        next_seq: AtomicU64::new(0),
        received: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        delivery: Mutex::new(histogram()?),
    });
    let standins = start_standins(&dir, &shared).await?;
    wait_healthy(&url).await?;
    // The caller writes the pid once the server answers: a moment later.
    let pid_file = dir.join("server.pid");
    let mut server_pid = None;
    for _ in 0..50 {
        server_pid = std::fs::read_to_string(&pid_file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if server_pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if server_pid.is_none() {
        eprintln!(
            "providerload: no {}: the server's CPU time is not measured",
            pid_file.display()
        );
    }

    let mut usernames = Vec::new();
    for &provider in &providers {
        let began = Instant::now();
        usernames.push(setup_users(&url, &apikey, &prefix, provider, users).await?);
        eprintln!(
            "providerload: {users} users with an {} row in {:.1} s",
            provider.name(),
            began.elapsed().as_secs_f64()
        );
    }
    for (&provider, names) in providers.iter().zip(&usernames) {
        let mut peaks = Vec::new();
        for round in 1..=rounds {
            eprintln!(
                "providerload: {}: closed loop, {notifiers} notifiers (round {round} of {rounds})",
                provider.name()
            );
            let summary = run_once(
                &url,
                &key,
                provider,
                names,
                notifiers,
                duration,
                0.0,
                "peak",
                round,
                &shared,
                &standins,
                server_pid.as_deref(),
            )
            .await?;
            peaks.push(summary.rps);
            println!("{}", serde_json::to_string(&summary)?);
        }
        let half = median(peaks) / 2.0;
        for round in 1..=rounds {
            eprintln!(
                "providerload: {}: paced at {half:.0}/s, half the median peak (round {round} of {rounds})",
                provider.name()
            );
            let summary = run_once(
                &url,
                &key,
                provider,
                names,
                notifiers,
                duration,
                half,
                "half-peak",
                round,
                &shared,
                &standins,
                server_pid.as_deref(),
            )
            .await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let args = Args(argv.clone());
    let max_secs: u64 = args.num("max-secs", 900)?;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(max_secs));
        eprintln!("providerload: still running after {max_secs} s (--max-secs); giving up");
        std::process::exit(3);
    });
    let threads: usize = std::env::var("LOADGEN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match argv.get(1).map(|s| s.as_str()) {
            Some("run") => run(&args).await,
            _ => bail!("usage: providerload run ... (see the source header)"),
        }
    })
}
