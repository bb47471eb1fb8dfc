//! Staleness across two instances on one PostgreSQL database: how long after
//! a change was answered by instance A instance B's answers show it.
//!
//!   staleness --url-a URL --url-b URL --apikey KEY --lifetime TEXT
//!             [--changes N] [--gap-ms MS] [--timeout-ms MS] [--poll-us US]
//!             [--prefix P]
//!
//! It signs one user up and logs it in through A, writes its ring row at
//! serial 1 through A, and reads it through B until B shows it. Then, N
//! times (default 1000): a pause of `--gap-ms` (default 5); one GET on B,
//! which must still show the last change (else `went_back`), so that B holds
//! the row list freshly read; a `PUT /v1/api/user/token/1` through A with a
//! push token never used before; then GETs on B one after another, on one
//! keep-alive connection (with `--poll-us`, that long apart: the thread
//! sleeps, leaving the cores to the servers and PostgreSQL; default 0, one
//! right after another), until an answer holds the new token. The
//! staleness of a change runs from when A's answer has been read to when
//! the first B answer holding it has been read, so it includes one GET's
//! round trip (`get_p50_ms` shows what that costs).
//!
//! A change not seen within `--timeout-ms` (default 5000) is `unseen`
//! (after 10 such, the run stops). `--lifetime` is B's
//! `PUSHTOKEN_CACHE_LIFETIME`, for the label and for one check: a GET sent
//! more than the lifetime after A's answer must show the change (B serves
//! no entry once the lifetime has passed since its query began, and every
//! entry holding the old row was read before A answered); a change with such
//! a stale answer counts in `stale_after_lifetime`.
//!
//! Prints one JSON line: label "staleness", the lifetime, the count, the
//! staleness p50/p90/p99/max in ms, and the counts above (all must be 0).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use hyper::{Method, StatusCode};
use pushtoken_bench::{histogram, max_ms, micros, ms, Args, Http};
use serde::Serialize;

#[derive(Serialize)]
struct Summary {
    label: &'static str,
    scenario: &'static str,
    lifetime: String,
    changes: u64,
    count: u64,
    unseen: u64,
    stale_after_lifetime: u64,
    went_back: u64,
    errors: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    polls_per_change: f64,
    poll_us: u64,
    get_p50_ms: f64,
    get_p99_ms: f64,
    put_p50_ms: f64,
    secs: f64,
}

/// A duration as the server's settings write it: `50ms`, `2s`, `60s`.
fn parse_lifetime(text: &str) -> Option<Duration> {
    if let Some(n) = text.strip_suffix("ms") {
        n.parse().ok().map(Duration::from_millis)
    } else if let Some(n) = text.strip_suffix('s') {
        n.parse().ok().map(Duration::from_secs_f64)
    } else {
        None
    }
}

/// A push token no other change uses: 64 hex characters.
fn token_of(nonce: u64, k: u64) -> String {
    format!("{nonce:016x}{k:048x}")
}

fn main() -> Result<()> {
    let args = Args(std::env::args().collect());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(&args))
}

async fn run(args: &Args) -> Result<()> {
    let mut a = Http::new(args.req("url-a")?)?;
    let mut b = Http::new(args.req("url-b")?)?;
    let apikey = args.req("apikey")?;
    let lifetime_text = args.req("lifetime")?.to_string();
    let lifetime = parse_lifetime(&lifetime_text);
    let changes: u64 = args.num("changes", 1000)?;
    let gap = Duration::from_millis(args.num("gap-ms", 5)?);
    let timeout = Duration::from_millis(args.num("timeout-ms", 5000)?);
    let poll_pause = Duration::from_micros(args.num("poll-us", 0)?);
    let prefix = args.get("prefix").unwrap_or("staleness");

    let username = format!("{prefix}_1");
    let password = "stale_pw_1";
    let session = a.sign_up_and_log_in(&username, password, apikey).await?;
    let auth = [("token", session.as_str())];

    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let mut hist = histogram()?;
    let mut gets = histogram()?;
    let mut puts = histogram()?;
    let (mut unseen, mut stale_after, mut went_back, mut errors, mut polls) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    // Change 0 (untimed): the row exists, and B has seen it.
    let mut current: Option<String> = None;
    let started = Instant::now();
    for k in 0..=changes {
        if unseen >= 10 {
            eprintln!("staleness: 10 changes unseen, stopping");
            break;
        }
        if k > 0 {
            tokio::time::sleep(gap).await;
        }
        if let Some(last) = &current {
            match b.send(Method::GET, "/v1/api/user/token", &auth, None).await {
                Ok((StatusCode::OK, body)) => {
                    if !contains(&body, last) {
                        went_back += 1;
                        eprintln!("staleness: change {} no longer shown by B", k - 1);
                    }
                }
                other => {
                    errors += 1;
                    show_error("GET on B", other);
                }
            }
        }
        let token = token_of(nonce, k);
        let body = serde_json::json!({"push_token": token, "language": "en"});
        let sent = Instant::now();
        match a
            .send(
                Method::PUT,
                "/v1/api/user/token/1",
                &auth,
                Some(body.to_string()),
            )
            .await
        {
            Ok((s, _)) if s == StatusCode::OK || s == StatusCode::CREATED => {}
            other => {
                errors += 1;
                show_error("PUT on A", other);
                continue;
            }
        }
        let answered = Instant::now();
        if k > 0 {
            let _ = puts.record(micros(answered - sent));
        }
        let mut stale_late = false;
        let seen = loop {
            let asked = Instant::now();
            if asked - answered > timeout {
                break None;
            }
            let reply = b.send(Method::GET, "/v1/api/user/token", &auth, None).await;
            let got = Instant::now();
            if k > 0 {
                polls += 1;
                let _ = gets.record(micros(got - asked));
            }
            match reply {
                Ok((StatusCode::OK, body)) => {
                    if contains(&body, &token) {
                        break Some(got - answered);
                    }
                    if lifetime.is_some_and(|l| asked - answered > l) {
                        stale_late = true;
                    }
                }
                other => {
                    errors += 1;
                    show_error("GET on B", other);
                }
            }
            if !poll_pause.is_zero() {
                // Nothing else runs on this thread meanwhile: the
                // connection is idle between a read answer and the next GET.
                std::thread::sleep(poll_pause);
            }
        };
        if k == 0 {
            if seen.is_none() {
                bail!("B never showed the first row");
            }
        } else {
            match seen {
                Some(d) => {
                    let _ = hist.record(micros(d));
                }
                None => {
                    unseen += 1;
                    eprintln!("staleness: change {k} not seen by B within {timeout:?}");
                }
            }
            if stale_late {
                stale_after += 1;
                eprintln!(
                    "staleness: change {k}: B answered without it to a GET sent over \
                     {lifetime_text} after A's answer (seen after {seen:?})"
                );
            }
        }
        current = Some(token);
    }
    let count = hist.len();
    let summary = Summary {
        label: "staleness",
        scenario: "staleness",
        lifetime: lifetime_text,
        changes,
        count,
        unseen,
        stale_after_lifetime: stale_after,
        went_back,
        errors,
        p50_ms: ms(&hist, 0.50),
        p90_ms: ms(&hist, 0.90),
        p99_ms: ms(&hist, 0.99),
        max_ms: max_ms(&hist),
        mean_ms: if count > 0 { hist.mean() / 1000.0 } else { 0.0 },
        polls_per_change: if changes > 0 {
            polls as f64 / changes as f64
        } else {
            0.0
        },
        poll_us: poll_pause.as_micros() as u64,
        get_p50_ms: ms(&gets, 0.50),
        get_p99_ms: ms(&gets, 0.99),
        put_p50_ms: ms(&puts, 0.50),
        secs: started.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Whether an answer's body holds `token` (each change's token is unique).
fn contains(body: &[u8], token: &str) -> bool {
    body.windows(token.len()).any(|w| w == token.as_bytes())
}

fn show_error(what: &str, result: Result<(StatusCode, bytes::Bytes)>) {
    match result {
        Ok((s, b)) => eprintln!("staleness: {what}: {s} {}", String::from_utf8_lossy(&b)),
        Err(e) => eprintln!("staleness: {what}: {e}"),
    }
}
