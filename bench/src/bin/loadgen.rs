//! Load generator for pushtoken: keep-alive HTTP/1.1 connections, one task per
//! connection, each sending its next request when the previous answer has
//! been read (closed loop), or on a fixed schedule with `--rate` (open loop:
//! a connection behind its schedule counts latency from the scheduled send
//! time, so a stall is not hidden; one on time counts from its timer's wake,
//! as tokio's timers round each wait up to the next millisecond). Every
//! connection is opened before the clock starts, so the
//! figures are those of keep-alive traffic; the slowest connect is reported
//! apart (`connect_max_ms`). Latencies go into an HDR histogram; the summary
//! is one JSON line on stdout.
//!
//!   loadgen setup --url URL --apikey KEY --users N --prefix P --out FILE
//!                 [--tokens T]
//!   loadgen run   --url URL --scenario get|put|post|delete|login|ceiling
//!                 --conns C --duration SECS [--rate RPS] [--users-file FILE]
//!                 [--max-requests N] [--label TEXT]
//!
//! Expected statuses (anything else, or a transport failure, is an error):
//! get 200; put 200/201; post 201 (200 if the token was already held);
//! delete 200; login 201; ceiling 200.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use pushtoken_bench::{authority, Args};
use serde::Serialize;
use tokio::net::TcpStream;

#[derive(Clone, Debug)]
struct User {
    username: String,
    password: String,
    token: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    Get,
    Put,
    Post,
    Delete,
    Login,
    Ceiling,
}

struct Conn {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole answer.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().unwrap();
        sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.as_str());
        if let Some(t) = token {
            req = req.header("token", t);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(b)))?,
            None => req.body(Full::new(Bytes::new()))?,
        };
        let result = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

fn read_users(path: &str) -> Result<Vec<User>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let users: Vec<User> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            User {
                username: f[0].into(),
                password: f[1].into(),
                token: f[2].into(),
            }
        })
        .collect();
    if users.is_empty() {
        bail!("no users in {path}");
    }
    Ok(users)
}

/// Signs up and logs in `n` users (8 at a time: each costs two password
/// hashes), gives each `--tokens` ring tokens (serials 1..T, default 3), writes
/// `username password token` lines.
async fn setup(args: &Args) -> Result<()> {
    let addr = authority(args.req("url")?)?;
    let apikey = args.req("apikey")?.to_string();
    let n: usize = args.num("users", 64)?;
    let prefix = args.get("prefix").unwrap_or("bench").to_string();
    let out = args.req("out")?.to_string();
    let tokens: u64 = args.num("tokens", 3)?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, apikey, prefix, next) =
            (addr.clone(), apikey.clone(), prefix.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&addr);
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    break;
                }
                let username = format!("{prefix}_{i:06}");
                let password = format!("pw_{i:06}_x");
                let body = serde_json::json!({"username": username, "password": password, "apikey": apikey});
                let (s, b) = conn.send(Method::POST, "/v1/api/user", None, Some(body.to_string())).await?;
                if s != StatusCode::CREATED {
                    bail!("sign-up {username}: {s} {}", String::from_utf8_lossy(&b));
                }
                let body = serde_json::json!({"username": username, "password": password});
                let (s, b) = conn.send(Method::POST, "/v1/api/user/login", None, Some(body.to_string())).await?;
                if s != StatusCode::CREATED {
                    bail!("login {username}: {s} {}", String::from_utf8_lossy(&b));
                }
                let v: serde_json::Value = serde_json::from_slice(&b)?;
                let token = v["token"].as_str().ok_or_else(|| anyhow!("no token in login answer"))?.to_string();
                for serial in 1..=tokens {
                    let body = serde_json::json!({
                        "push_token": format!("{:0>16}{:0>16x}{:032x}", i, serial, 0xfeedu32),
                        "language": "zh", "os": "ANDROID", "push_platform": "FCM", "phone_model": "xiaomi6"
                    });
                    let path = format!("/v1/api/user/token/{serial}");
                    let (s, b) = conn.send(Method::PUT, &path, Some(&token), Some(body.to_string())).await?;
                    if !s.is_success() {
                        bail!("seed token {username}: {s} {}", String::from_utf8_lossy(&b));
                    }
                }
                made.push(format!("{username} {password} {token}"));
            }
            Ok::<_, anyhow::Error>(made)
        }));
    }
    let mut lines = Vec::new();
    for t in tasks {
        lines.extend(t.await??);
    }
    lines.sort();
    std::fs::write(&out, lines.join("\n") + "\n")?;
    eprintln!("setup: {} users written to {out}", lines.len());
    Ok(())
}

#[derive(Serialize)]
struct Summary {
    label: String,
    scenario: String,
    conns: usize,
    target_rate: f64,
    requests: u64,
    errors: u64,
    secs: f64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    connect_max_ms: f64,
}

struct Shared {
    /// Every connection task and `run` meet here once connected, and again
    /// once `run` has set `start`.
    connected: tokio::sync::Barrier,
    go: tokio::sync::Barrier,
    start: std::sync::OnceLock<Instant>,
    stop: AtomicBool,
    issued: AtomicU64,
    max_requests: u64,
    errors_shown: AtomicU64,
}

/// A push token no other request of any run uses: 64 hex characters.
fn fresh_token(nonce: u64, conn: usize, counter: u64) -> String {
    format!("{:016x}{:016x}{:032x}", nonce, conn, counter)
}

struct TaskResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    phase_start: Instant,
    connect: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    scenario: Scenario,
    addr: String,
    conn_index: usize,
    user: User,
    nonce: u64,
    duration: Duration,
    interval: Option<Duration>,
    shared: Arc<Shared>,
    delete_ready: Arc<tokio::sync::Barrier>,
) -> Result<TaskResult> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut conn = Conn::new(&addr);
    // A connect that fails here is retried by the first send (and counted
    // as that request's error if it fails again).
    let connecting = Instant::now();
    if let Err(e) = conn.connect().await {
        eprintln!("connect: {e}");
    }
    let connect = connecting.elapsed();
    shared.connected.wait().await;
    shared.go.wait().await;
    let start = *shared
        .start
        .get()
        .ok_or_else(|| anyhow!("run did not set the start"))?;
    let deadline = start + duration;
    let (mut ok, mut errors) = (0u64, 0u64);
    let serial_base: i64 = 1_000_000 + conn_index as i64 * 1_000_000;
    let mut seeded: i64 = 0;
    let mut deadline = deadline;
    let mut start = start;
    if scenario == Scenario::Delete {
        // Untimed seeding: as many message tokens as this connection can
        // create in the run's duration (bounded), deleted in the timed phase.
        let seed_until = deadline;
        let cap = (shared.max_requests / 256).max(2000) as i64;
        while Instant::now() < seed_until && seeded < cap {
            let body = serde_json::json!({"push_token": fresh_token(nonce ^ 0xdead, conn_index, seeded as u64), "language": "zh"});
            let path = format!("/v1/api/user/message/token/{}", serial_base + seeded);
            match conn
                .send(
                    Method::PUT,
                    &path,
                    Some(&user.token),
                    Some(body.to_string()),
                )
                .await
            {
                Ok((s, _)) if s.is_success() => seeded += 1,
                _ => {}
            }
        }
        delete_ready.wait().await;
        let seed_time = seed_until.saturating_duration_since(start);
        start = Instant::now();
        deadline = start + seed_time;
    }
    let mut k: u64 = 0;
    loop {
        let scheduled = match interval {
            Some(iv) => {
                let at =
                    start + iv.mul_f64(k as f64) + iv.mul_f64((conn_index as f64 * 0.618).fract());
                if at >= deadline {
                    break;
                }
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                    // On time: count from the wake. tokio's timers tick every
                    // millisecond, so the sleep ends up to a millisecond past
                    // `at`: the load generator's rounding, not the server's.
                    Instant::now().max(at)
                } else {
                    // Behind schedule (the last answer came late): count from
                    // the scheduled time, so a stall is not hidden.
                    at
                }
            }
            None => Instant::now(),
        };
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        if shared.issued.fetch_add(1, Ordering::Relaxed) >= shared.max_requests {
            break;
        }
        if scenario == Scenario::Delete && k as i64 >= seeded {
            // Out of rows to delete: end the phase for everyone.
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let (method, path, body, expect): (Method, String, Option<String>, &[u16]) = match scenario {
            Scenario::Get => (Method::GET, "/v1/api/user/token".into(), None, &[200]),
            Scenario::Ceiling => (Method::GET, "/v1/api/user/token".into(), None, &[200]),
            Scenario::Put => (
                Method::PUT,
                format!("/v1/api/user/token/{}", 1 + k % 3),
                Some(serde_json::json!({"push_token": fresh_token(nonce, conn_index, k), "language": "en"}).to_string()),
                &[200, 201],
            ),
            Scenario::Post => (
                Method::POST,
                "/v1/api/user/message/token".into(),
                Some(
                    serde_json::json!({"push_token": fresh_token(nonce, conn_index, k), "language": "zh",
                                       "os": "ANDROID", "push_platform": "FCM"})
                    .to_string(),
                ),
                &[201, 200],
            ),
            Scenario::Delete => (
                Method::DELETE,
                format!("/v1/api/user/message/token/{}", serial_base + k as i64),
                None,
                &[200],
            ),
            Scenario::Login => (
                Method::POST,
                "/v1/api/user/login".into(),
                Some(serde_json::json!({"username": user.username, "password": user.password}).to_string()),
                &[201],
            ),
        };
        let token = match scenario {
            Scenario::Login | Scenario::Ceiling => None,
            _ => Some(user.token.as_str()),
        };
        let result = conn.send(method, &path, token, body).await;
        let micros = scheduled.elapsed().as_micros().max(1) as u64;
        match result {
            Ok((s, _)) if expect.contains(&s.as_u16()) => {
                ok += 1;
                let _ = hist.record(micros.min(60_000_000));
            }
            other => {
                errors += 1;
                if shared.errors_shown.fetch_add(1, Ordering::Relaxed) < 5 {
                    match other {
                        Ok((s, b)) => {
                            eprintln!("error: {path}: {s} {}", String::from_utf8_lossy(&b))
                        }
                        Err(e) => eprintln!("error: {path}: {e}"),
                    }
                }
            }
        }
        k += 1;
    }
    Ok(TaskResult {
        hist,
        ok,
        errors,
        phase_start: start,
        connect,
    })
}

async fn run(args: &Args) -> Result<()> {
    let addr = authority(args.req("url")?)?;
    let scenario = match args.req("scenario")? {
        "get" => Scenario::Get,
        "put" => Scenario::Put,
        "post" => Scenario::Post,
        "delete" => Scenario::Delete,
        "login" => Scenario::Login,
        "ceiling" => Scenario::Ceiling,
        other => bail!("unknown scenario {other}"),
    };
    let conns: usize = args.num("conns", 1)?;
    let duration = Duration::from_secs_f64(args.num("duration", 5.0)?);
    let rate: f64 = args.num("rate", 0.0)?;
    let max_requests: u64 = args.num("max-requests", 5_000_000)?;
    let label = args.get("label").unwrap_or("").to_string();
    let users = match args.get("users-file") {
        Some(f) => read_users(f)?,
        None if scenario == Scenario::Ceiling => {
            vec![User {
                username: String::new(),
                password: String::new(),
                token: String::new(),
            }]
        }
        None => bail!("--users-file is needed for {scenario:?}"),
    };
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(conns as f64 / rate));
    let shared = Arc::new(Shared {
        connected: tokio::sync::Barrier::new(conns + 1),
        go: tokio::sync::Barrier::new(conns + 1),
        start: std::sync::OnceLock::new(),
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        max_requests,
        errors_shown: AtomicU64::new(0),
    });
    let barrier = Arc::new(tokio::sync::Barrier::new(conns));
    let mut tasks = Vec::new();
    for i in 0..conns {
        tasks.push(tokio::spawn(worker(
            scenario,
            addr.clone(),
            i,
            users[i % users.len()].clone(),
            nonce,
            duration,
            interval,
            shared.clone(),
            barrier.clone(),
        )));
    }
    shared.connected.wait().await;
    let start = *shared.start.get_or_init(Instant::now);
    shared.go.wait().await;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut errors) = (0, 0);
    let mut phase_start = start;
    let mut connect_max = Duration::ZERO;
    for t in tasks {
        let r = t.await??;
        hist.add(&r.hist)?;
        ok += r.ok;
        errors += r.errors;
        connect_max = connect_max.max(r.connect);
        // For delete, the timed phase began after seeding: measure it alone.
        phase_start = phase_start.max(r.phase_start);
    }
    let secs = phase_start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let summary = Summary {
        label,
        scenario: args.req("scenario")?.to_string(),
        conns,
        target_rate: rate,
        requests: ok,
        errors,
        secs,
        rps: ok as f64 / secs,
        p50_ms: if ok > 0 { ms(0.50) } else { 0.0 },
        p90_ms: if ok > 0 { ms(0.90) } else { 0.0 },
        p99_ms: if ok > 0 { ms(0.99) } else { 0.0 },
        max_ms: if ok > 0 {
            hist.max() as f64 / 1000.0
        } else {
            0.0
        },
        connect_max_ms: connect_max.as_secs_f64() * 1000.0,
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let threads: usize = std::env::var("LOADGEN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let args = Args(argv.clone());
    rt.block_on(async {
        match argv.get(1).map(|s| s.as_str()) {
            Some("setup") => setup(&args).await,
            Some("run") => run(&args).await,
            _ => bail!("usage: loadgen setup|run ... (see the source header)"),
        }
    })
}
