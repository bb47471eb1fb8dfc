//! Push-socket load for pushtoken. It speaks the socket as the public clients
//! do: TLS without verifying the certificate (rustls, naming a vendor host),
//! frames of an 8-byte little-endian header (command, payload length) and a
//! payload; a register (cmd 1) answered by the token (cmd 2); events (cmd 3),
//! each answered by a heartbeat (cmd 0), as both public clients do.
//!
//!   pushload idle   --push ADDR --url URL --server-pid PID --conns N
//!                   [--concurrency C] [--hold SECS] [--prefix P] [--label L]
//!   pushload notify --push ADDR --url URL [--bind-url URL] --users-file FILE
//!                   --key KEY --notifiers C --duration SECS [--rate R]
//!                   [--prefix P] [--max-requests N] [--label L] [--fsync-dir DIR]
//!   pushload fsync  --dir DIR [--count N] [--label L]
//!
//! `idle` opens N connections (TCP, TLS, register, token), at most C
//! handshakes at a time, and holds them without a byte more. It reads the
//! server's VmRSS and RssAnon (/proc/PID/status) before, after a tenth of
//! them and after all, the server's own count of connections
//! (`pushtoken_push_connections` at URL/metrics), and the kernel's TCP
//! buffer pages (/proc/net/sockstat: system-wide, both ends of every
//! loopback connection, and not part of any process's RSS). It then closes
//! them all, waits for the server to see them go, and reads VmRSS again.
//!
//! `notify` gives each user of FILE (lines `username password session`, as
//! `loadgen setup` writes them) one socket: it registers as `P-<index>`,
//! binds the token as the user's ring token at serial 1 (`PUT
//! /v1/api/user/token/1` through `--bind-url`, default URL), and reads its
//! frames. C keep-alive HTTP/1.1 connections then send `POST /v1/api/notify`
//! to URL, each event to the next user in turn and tagged with a unique
//! `seq`: closed loop by default, or on a fixed schedule with `--rate` (a
//! notifier behind its schedule counts from the scheduled time, as `loadgen`
//! does). Delivery latency runs from just before the request is written to
//! when the event frame carrying that `seq` has been read on the user's
//! socket; the notify answer's own latency is reported beside it. Every
//! socket and HTTP connection is opened before the clock starts. After the
//! duration it waits up to 10 s for the frames still on their way; an
//! accepted event whose frame never came is `lost`.
//!
//! With `--fsync-dir`, a thread writes 4 KiB and calls fdatasync on a file
//! in DIR every 10 ms while the notifiers run: the latency under every
//! durable commit (each event is committed before its frame is sent), on
//! the machine's disk during the same seconds. `fsync` does the same N
//! times back to back (default 200).
//!
//! The summary is one JSON line on stdout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use pushtoken_bench::{histogram, max_ms, micros, ms, Args, Http};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

const HEARTBEAT: i32 = 0;
const REGISTER: i32 = 1;
const TOKEN: i32 = 2;
const EVENT: i32 = 3;

/// Longest wait for a handshake and its token.
const REGISTER_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait, after the last notify, for the frames still on their way.
const DRAIN_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The push socket.

/// Accepts any certificate, as the public clients do.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let algorithms = ring::default_provider().signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let algorithms = ring::default_provider().signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_connector() -> Result<TlsConnector> {
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

struct Socket {
    tls: TlsStream<TcpStream>,
}

impl Socket {
    /// Connects, registers as `imei` and reads the token: the socket and
    /// its token.
    async fn open(connector: &TlsConnector, addr: &str, imei: &str) -> Result<(Self, String)> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("eurpush.lancens.com")?;
        let tls = connector.connect(name, tcp).await?;
        let mut socket = Socket { tls };
        let register = json!({
            "imei": imei, "imsi": "460001234567890", "type": "android", "brand": "bench",
        });
        socket
            .send(REGISTER, register.to_string().as_bytes())
            .await?;
        let (command, payload) = socket
            .read_frame()
            .await?
            .ok_or_else(|| anyhow!("closed before the token"))?;
        if command != TOKEN {
            bail!("expected the token frame (2), got command {command}");
        }
        let answer: Value = serde_json::from_slice(&payload)?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in {answer}"))?
            .to_owned();
        Ok((socket, token))
    }

    async fn send(&mut self, command: i32, payload: &[u8]) -> Result<()> {
        let mut bytes = Vec::with_capacity(8 + payload.len());
        bytes.extend(command.to_le_bytes());
        bytes.extend((payload.len() as i32).to_le_bytes());
        bytes.extend_from_slice(payload);
        self.tls.write_all(&bytes).await?;
        self.tls.flush().await?;
        Ok(())
    }

    /// The next frame; `None` when the server closed the connection.
    async fn read_frame(&mut self) -> Result<Option<(i32, Vec<u8>)>> {
        let mut header = [0u8; 8];
        match self.tls.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let command = i32::from_le_bytes(header[..4].try_into()?);
        let length = i32::from_le_bytes(header[4..].try_into()?);
        let mut payload = vec![0u8; usize::try_from(length)?];
        self.tls.read_exact(&mut payload).await?;
        Ok(Some((command, payload)))
    }
}

/// Opens sockets `from..to` (imei `prefix-<index>`), at most `concurrency`
/// at a time, in index order; records each one's connect-to-token time.
async fn open_sockets(
    addr: &str,
    prefix: &str,
    from: usize,
    to: usize,
    concurrency: usize,
    hist: &mut Histogram<u64>,
) -> Result<Vec<(Socket, String)>> {
    let connector = tls_connector()?;
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(to - from);
    for i in from..to {
        let (connector, addr, permits) = (connector.clone(), addr.to_owned(), permits.clone());
        let imei = format!("{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let began = Instant::now();
            let opened =
                tokio::time::timeout(REGISTER_WITHIN, Socket::open(&connector, &addr, &imei))
                    .await
                    .map_err(|_| anyhow!("socket {imei}: no token within {REGISTER_WITHIN:?}"))?
                    .with_context(|| format!("socket {imei}"))?;
            Ok::<_, anyhow::Error>((opened, began.elapsed()))
        }));
    }
    let mut sockets = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (opened, took) = task.await??;
        let _ = hist.record(micros(took));
        sockets.push(opened);
    }
    Ok(sockets)
}

/// Raises this process's soft limit of open files to its hard limit; the
/// limit in force.
fn raise_open_file_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every system
    Ok(limit.rlim_cur as u64)
}

// ---------------------------------------------------------------------------
// Measuring the server.

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// The kernel's TCP buffer memory, in pages, and its TCP sockets in use
/// (/proc/net/sockstat: the whole system).
fn tcp_sockstat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("mem"), field("inuse"))
}

#[derive(Serialize, Clone, Copy, Default)]
struct Memory {
    /// Connections the server says it holds.
    held: u64,
    rss_kib: u64,
    rss_anon_kib: u64,
    /// The kernel's TCP buffer pages, system-wide (not in RSS).
    tcp_mem_pages: u64,
    tcp_inuse: u64,
}

async fn memory(pid: u32, http: &mut Http) -> Result<Memory> {
    let held = push_connections(http).await?;
    let (tcp_mem_pages, tcp_inuse) = tcp_sockstat();
    Ok(Memory {
        held,
        rss_kib: status_kib(pid, "VmRSS")?,
        rss_anon_kib: status_kib(pid, "RssAnon")?,
        tcp_mem_pages,
        tcp_inuse,
    })
}

/// The server's `pushtoken_push_connections` gauge.
async fn push_connections(http: &mut Http) -> Result<u64> {
    let (status, body) = http.send(Method::GET, "/metrics", &[], None).await?;
    if status != StatusCode::OK {
        bail!("/metrics: {status}");
    }
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("pushtoken_push_connections "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

// ---------------------------------------------------------------------------
// HTTP.

// ---------------------------------------------------------------------------
// idle

#[derive(Serialize)]
struct IdleSummary {
    label: String,
    scenario: &'static str,
    conns: usize,
    concurrency: usize,
    open_file_limit: u64,
    /// Seconds to open all of them.
    open_secs: f64,
    opens_per_sec: f64,
    /// Connect to token, per connection.
    open_p50_ms: f64,
    open_p99_ms: f64,
    open_max_ms: f64,
    before: Memory,
    /// After the first tenth.
    tenth: Memory,
    after: Memory,
    /// After all were closed and the server saw them go.
    closed: Memory,
    /// (after − before) RSS / conns.
    per_conn_bytes: f64,
    /// (after − tenth) RSS / (conns − tenth): the cost of one more.
    marginal_per_conn_bytes: f64,
    per_conn_anon_bytes: f64,
    /// (after − before) kernel TCP pages × page size / conns: both ends.
    kernel_tcp_per_conn_bytes: f64,
}

async fn idle(args: &Args) -> Result<()> {
    let addr = args.req("push")?.to_owned();
    let mut http = Http::new(args.req("url")?)?;
    let pid: u32 = args.req("server-pid")?.parse()?;
    let conns: usize = args.num("conns", 10_000)?;
    let concurrency: usize = args.num("concurrency", 64)?;
    let hold = Duration::from_secs_f64(args.num("hold", 2.0)?);
    let prefix = args.get("prefix").unwrap_or("idle").to_owned();
    let label = args.get("label").unwrap_or("").to_owned();
    let limit = raise_open_file_limit()?;
    if (limit as usize) < conns + 256 {
        bail!(
            "the open file limit ({limit}) is too low for {conns} connections; raise `ulimit -Hn`"
        );
    }
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;

    let before = memory(pid, &mut http).await?;
    let mut hist = histogram()?;
    let tenth_count = (conns / 10).max(1).min(conns);
    let started = Instant::now();
    let mut sockets = open_sockets(&addr, &prefix, 0, tenth_count, concurrency, &mut hist).await?;
    let first_part = started.elapsed();
    tokio::time::sleep(hold).await;
    let tenth = memory(pid, &mut http).await?;
    let resumed = Instant::now();
    sockets.extend(open_sockets(&addr, &prefix, tenth_count, conns, concurrency, &mut hist).await?);
    let open_secs = (first_part + resumed.elapsed()).as_secs_f64();
    tokio::time::sleep(hold).await;
    let after = memory(pid, &mut http).await?;
    if after.held < conns as u64 {
        eprintln!(
            "idle: the server holds {} connections of {conns}",
            after.held
        );
    }
    drop(sockets);
    let closing = Instant::now();
    let mut closed = memory(pid, &mut http).await?;
    while closed.held > before.held && closing.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        closed = memory(pid, &mut http).await?;
    }
    tokio::time::sleep(hold).await;
    closed = memory(pid, &mut http).await?;

    let delta = |a: u64, b: u64| (a as f64 - b as f64) * 1024.0;
    let summary = IdleSummary {
        label,
        scenario: "idle",
        conns,
        concurrency,
        open_file_limit: limit,
        open_secs,
        opens_per_sec: conns as f64 / open_secs,
        open_p50_ms: ms(&hist, 0.5),
        open_p99_ms: ms(&hist, 0.99),
        open_max_ms: max_ms(&hist),
        before,
        tenth,
        after,
        closed,
        per_conn_bytes: delta(after.rss_kib, before.rss_kib) / conns as f64,
        marginal_per_conn_bytes: delta(after.rss_kib, tenth.rss_kib)
            / (conns - tenth_count).max(1) as f64,
        per_conn_anon_bytes: delta(after.rss_anon_kib, before.rss_anon_kib) / conns as f64,
        kernel_tcp_per_conn_bytes: (after.tcp_mem_pages as f64 - before.tcp_mem_pages as f64)
            * page
            / conns as f64,
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

// ---------------------------------------------------------------------------
// notify

struct User {
    username: String,
    session: String,
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
                session: f.get(2).copied().unwrap_or_default().into(),
            }
        })
        .collect();
    if users.is_empty() {
        bail!("no users in {path}");
    }
    Ok(users)
}

/// What the notifiers and the sockets share.
struct Shared {
    /// Per event `seq`: microseconds since `epoch` + 1 when its latency
    /// starts; 0 before it is sent and once its frame has come.
    stamps: Vec<AtomicU64>,
    /// Per event `seq`: the event id the notify answered with.
    ids: Vec<AtomicU64>,
    epoch: Instant,
    next_seq: AtomicU64,
    /// Events answered 202.
    accepted: AtomicU64,
    /// Event frames read (each `seq` once).
    received: AtomicU64,
    /// Frames for a `seq` not sent, or sent to another user, or twice.
    strays: AtomicU64,
    /// Sockets the server closed (or that failed) during the run.
    socket_failures: AtomicU64,
    users: u64,
    stop_sending: AtomicBool,
    errors_shown: AtomicU64,
    /// Delivery latencies, microseconds.
    delivery: std::sync::Mutex<Histogram<u64>>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// Reads a socket's frames, recording each event's latency, until the
/// server closes it (or the task is aborted at the end of the run).
async fn reader(mut socket: Socket, index: u64, shared: Arc<Shared>) -> Result<()> {
    loop {
        let Some((command, payload)) = socket.read_frame().await? else {
            bail!("socket {index}: closed by the server");
        };
        if command != EVENT {
            continue;
        }
        let now = shared.now_us();
        let seq = serde_json::from_slice::<Value>(&payload)
            .ok()
            .and_then(|v| v.get("seq")?.as_u64());
        match seq.and_then(|s| shared.stamps.get(s as usize).map(|st| (s, st))) {
            Some((seq, stamp)) if seq % shared.users == index => {
                let sent = stamp.swap(0, Ordering::AcqRel);
                if sent == 0 {
                    shared.strays.fetch_add(1, Ordering::Relaxed);
                } else {
                    let latency = now.saturating_sub(sent - 1).clamp(1, 60_000_000);
                    let _ = shared.delivery.lock().expect("histogram").record(latency);
                    shared.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                shared.strays.fetch_add(1, Ordering::Relaxed);
            }
        }
        // As the public clients do after every frame they receive.
        socket.send(HEARTBEAT, b"").await?;
    }
}

struct NotifierResult {
    answers: Histogram<u64>,
    errors: u64,
    not_delivered: u64,
}

#[allow(clippy::too_many_arguments)]
async fn notifier(
    mut http: Http,
    index: usize,
    usernames: Arc<Vec<String>>,
    key: Arc<String>,
    start: Instant,
    duration: Duration,
    interval: Option<Duration>,
    shared: Arc<Shared>,
) -> Result<NotifierResult> {
    let mut answers = histogram()?;
    let (mut errors, mut not_delivered) = (0u64, 0u64);
    let deadline = start + duration;
    let authorization = format!("Bearer {key}");
    let offset = (index as f64 * 0.618).fract();
    let mut k: u64 = 0;
    loop {
        let scheduled = match interval {
            Some(iv) => {
                let at = start + iv.mul_f64(k as f64 + offset);
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
        if shared.stop_sending.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let Some(stamp) = shared.stamps.get(seq as usize) else {
            shared.stop_sending.store(true, Ordering::Relaxed);
            break;
        };
        let user = &usernames[(seq % shared.users) as usize];
        let body = json!({
            "user": user, "family": "ring", "ttl": 0,
            "event": {"type": "1", "uid": "BENCH-DOORBELL-1", "message": "bench", "seq": seq},
        })
        .to_string();
        let from_us = scheduled
            .saturating_duration_since(shared.epoch)
            .as_micros() as u64;
        stamp.store(from_us + 1, Ordering::Release);
        let result = http
            .send(
                Method::POST,
                "/v1/api/notify",
                &[("authorization", authorization.as_str())],
                Some(body),
            )
            .await;
        let took = scheduled.elapsed();
        match result {
            Ok((StatusCode::ACCEPTED, answer)) => {
                let _ = answers.record(micros(took));
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let answer_json = serde_json::from_slice::<Value>(&answer).ok();
                let field = |name: &str| answer_json.as_ref().and_then(|v| v.get(name)?.as_u64());
                shared.ids[seq as usize].store(field("id").unwrap_or(0), Ordering::Relaxed);
                let delivered = field("delivered");
                if delivered != Some(1) {
                    not_delivered += 1;
                    if shared.errors_shown.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("notify {seq}: {}", String::from_utf8_lossy(&answer));
                    }
                }
            }
            other => {
                // Never counted as lost: it was not accepted.
                stamp.store(0, Ordering::Release);
                errors += 1;
                if shared.errors_shown.fetch_add(1, Ordering::Relaxed) < 5 {
                    match other {
                        Ok((s, b)) => {
                            eprintln!("notify {seq}: {s} {}", String::from_utf8_lossy(&b))
                        }
                        Err(e) => eprintln!("notify {seq}: {e}"),
                    }
                }
            }
        }
    }
    Ok(NotifierResult {
        answers,
        errors,
        not_delivered,
    })
}

#[derive(Serialize)]
struct NotifySummary {
    label: String,
    scenario: &'static str,
    users: usize,
    notifiers: usize,
    target_rate: f64,
    secs: f64,
    /// Notifies answered 202, per second.
    rps: f64,
    accepted: u64,
    errors: u64,
    /// Answers whose `delivered` was not 1.
    not_delivered: u64,
    received: u64,
    lost: u64,
    /// Up to 20 lost events: `[seq, event id, user index]`.
    lost_events: Vec<[u64; 3]>,
    strays: u64,
    socket_failures: u64,
    /// Delivery: notify written → event frame read.
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The notify's own answer.
    answer_p50_ms: f64,
    answer_p99_ms: f64,
    answer_max_ms: f64,
    /// Socket connect-to-token, and the slowest HTTP connect.
    socket_open_max_ms: f64,
    connect_max_ms: f64,
    /// The disk during the run (with `--fsync-dir`).
    #[serde(flatten)]
    disk: Fsyncs,
}

async fn notify(args: &Args) -> Result<()> {
    let push = args.req("push")?.to_owned();
    let url = args.req("url")?.to_owned();
    let bind_url = args.get("bind-url").unwrap_or(&url).to_owned();
    let users = read_users(args.req("users-file")?)?;
    let key = Arc::new(args.req("key")?.to_owned());
    let notifiers: usize = args.num("notifiers", 32)?;
    let duration = Duration::from_secs_f64(args.num("duration", 5.0)?);
    let rate: f64 = args.num("rate", 0.0)?;
    let max_requests: usize = args.num("max-requests", 2_000_000)?;
    let prefix = args.get("prefix").unwrap_or("bench-push").to_owned();
    let label = args.get("label").unwrap_or("").to_owned();
    let fsync_dir = args.get("fsync-dir").map(str::to_owned);
    raise_open_file_limit()?;

    // One socket per user, bound as its ring token at serial 1.
    let mut open_hist = histogram()?;
    let sockets = open_sockets(&push, &prefix, 0, users.len(), 32, &mut open_hist).await?;
    let binders = 8.min(users.len());
    let mut binds = Vec::new();
    for b in 0..binders {
        let mut http = Http::new(&bind_url)?;
        let work: Vec<(String, String)> = (b..users.len())
            .step_by(binders)
            .map(|i| (users[i].session.clone(), sockets[i].1.clone()))
            .collect();
        binds.push(tokio::spawn(async move {
            for (session, token) in work {
                let body = json!({"push_token": token, "language": "en"}).to_string();
                let (s, answer) = http
                    .send(
                        Method::PUT,
                        "/v1/api/user/token/1",
                        &[("token", session.as_str())],
                        Some(body),
                    )
                    .await?;
                if !s.is_success() {
                    bail!(
                        "binding a socket token: {s} {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for b in binds {
        b.await??;
    }

    let shared = Arc::new(Shared {
        stamps: (0..max_requests).map(|_| AtomicU64::new(0)).collect(),
        ids: (0..max_requests).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
        next_seq: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        received: AtomicU64::new(0),
        strays: AtomicU64::new(0),
        socket_failures: AtomicU64::new(0),
        users: users.len() as u64,
        stop_sending: AtomicBool::new(false),
        errors_shown: AtomicU64::new(0),
        delivery: std::sync::Mutex::new(histogram()?),
    });
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (socket, _))| tokio::spawn(reader(socket, i as u64, shared.clone())))
        .collect();

    // Every notifier's connection open before the clock starts.
    let mut https = Vec::with_capacity(notifiers);
    let mut connect_max = Duration::ZERO;
    for _ in 0..notifiers {
        let mut http = Http::new(&url)?;
        let began = Instant::now();
        http.connect().await?;
        connect_max = connect_max.max(began.elapsed());
        https.push(http);
    }
    let usernames = Arc::new(users.iter().map(|u| u.username.clone()).collect::<Vec<_>>());
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(notifiers as f64 / rate));
    let start = Instant::now();
    let probe_stop = Arc::new(AtomicBool::new(false));
    let probe = fsync_dir.map(|dir| {
        let stop = probe_stop.clone();
        std::thread::spawn(move || probe_fsync(&dir, usize::MAX, Duration::from_millis(10), &stop))
    });
    let tasks: Vec<_> = https
        .into_iter()
        .enumerate()
        .map(|(i, http)| {
            tokio::spawn(notifier(
                http,
                i,
                usernames.clone(),
                key.clone(),
                start,
                duration,
                interval,
                shared.clone(),
            ))
        })
        .collect();
    let mut answers = histogram()?;
    let (mut errors, mut not_delivered) = (0, 0);
    for t in tasks {
        let r = t.await??;
        answers.add(&r.answers)?;
        errors += r.errors;
        not_delivered += r.not_delivered;
    }
    let secs = start.elapsed().as_secs_f64();
    probe_stop.store(true, Ordering::Relaxed);
    let disk = match probe {
        Some(probe) => Fsyncs::of(
            &probe
                .join()
                .map_err(|_| anyhow!("the fsync probe panicked"))??,
        ),
        None => Fsyncs::default(),
    };
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let waiting = Instant::now();
    while shared.received.load(Ordering::Relaxed) < accepted && waiting.elapsed() < DRAIN_WITHIN {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in &readers {
        if r.is_finished() {
            shared.socket_failures.fetch_add(1, Ordering::Relaxed);
        }
        r.abort();
    }
    for r in readers {
        if let Ok(Err(e)) = r.await {
            eprintln!("reader: {e:#}");
        }
    }
    let delivery = shared.delivery.lock().expect("histogram").clone();
    let received = shared.received.load(Ordering::Relaxed);
    // A stamp still set: accepted, and its frame never came.
    let sent = shared
        .next_seq
        .load(Ordering::Relaxed)
        .min(max_requests as u64);
    let lost_events: Vec<[u64; 3]> = (0..sent)
        .filter(|&seq| shared.stamps[seq as usize].load(Ordering::Acquire) != 0)
        .take(20)
        .map(|seq| {
            [
                seq,
                shared.ids[seq as usize].load(Ordering::Relaxed),
                seq % shared.users,
            ]
        })
        .collect();
    let summary = NotifySummary {
        label,
        scenario: "notify",
        users: users.len(),
        notifiers,
        target_rate: rate,
        secs,
        rps: accepted as f64 / secs,
        accepted,
        errors,
        not_delivered,
        received,
        lost: accepted.saturating_sub(received),
        lost_events,
        strays: shared.strays.load(Ordering::Relaxed),
        socket_failures: shared.socket_failures.load(Ordering::Relaxed),
        p50_ms: ms(&delivery, 0.5),
        p90_ms: ms(&delivery, 0.9),
        p99_ms: ms(&delivery, 0.99),
        max_ms: max_ms(&delivery),
        answer_p50_ms: ms(&answers, 0.5),
        answer_p99_ms: ms(&answers, 0.99),
        answer_max_ms: max_ms(&answers),
        socket_open_max_ms: max_ms(&open_hist),
        connect_max_ms: connect_max.as_secs_f64() * 1000.0,
        disk,
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

// ---------------------------------------------------------------------------
// fsync

/// Writes 4 KiB and calls fdatasync on a file in `dir`, `pause` apart,
/// until `count` calls or `stop`: their latencies (microseconds).
fn probe_fsync(
    dir: &str,
    count: usize,
    pause: Duration,
    stop: &AtomicBool,
) -> Result<Histogram<u64>> {
    use std::io::{Seek, SeekFrom, Write};
    let path = std::path::Path::new(dir).join(format!("fsync-probe-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).with_context(|| format!("creating {path:?}"))?;
    let mut hist = histogram()?;
    let block = [b'x'; 4096];
    for i in 0..count {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        file.seek(SeekFrom::Start((i % 64) as u64 * 4096))?;
        file.write_all(&block)?;
        let began = Instant::now();
        file.sync_data()?;
        let _ = hist.record(micros(began.elapsed()));
        std::thread::sleep(pause);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(hist)
}

/// fdatasync latencies: p50, p99, max, and how many took over 20 ms.
#[derive(Serialize, Default)]
struct Fsyncs {
    fsync_count: u64,
    fsync_p50_ms: f64,
    fsync_p99_ms: f64,
    fsync_max_ms: f64,
    fsync_over_20ms: u64,
}

impl Fsyncs {
    fn of(hist: &Histogram<u64>) -> Self {
        Self {
            fsync_count: hist.len(),
            fsync_p50_ms: ms(hist, 0.5),
            fsync_p99_ms: ms(hist, 0.99),
            fsync_max_ms: max_ms(hist),
            fsync_over_20ms: hist.count_between(20_001, 60_000_000),
        }
    }
}

#[derive(Serialize)]
struct FsyncSummary {
    label: String,
    scenario: &'static str,
    count: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn fsync(args: &Args) -> Result<()> {
    let dir = args.req("dir")?;
    let count: usize = args.num("count", 200)?;
    let hist = probe_fsync(dir, count, Duration::ZERO, &AtomicBool::new(false))?;
    let summary = FsyncSummary {
        label: args.get("label").unwrap_or("").to_owned(),
        scenario: "fsync",
        count,
        p50_ms: ms(&hist, 0.5),
        p90_ms: ms(&hist, 0.9),
        p99_ms: ms(&hist, 0.99),
        max_ms: max_ms(&hist),
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
            Some("idle") => idle(&args).await,
            Some("notify") => notify(&args).await,
            Some("fsync") => fsync(&args),
            _ => bail!("usage: pushload idle|notify|fsync ... (see the source header)"),
        }
    })
}
