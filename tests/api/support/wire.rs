//! HTTP/1.1 written by hand over TCP, for the real binary: one request per
//! connection, and what became of it.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// No single request may take longer than this; longer is a hang.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// The head of a request that closes its connection after the answer: the
/// request line, `Host`, then `headers`, then a JSON body of `length` bytes.
pub fn request_head(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    length: usize,
) -> String {
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// A whole request: [`request_head`] and `body`.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    request_head(method, path, host, headers, body.len()) + body
}

/// The header that carries a session token, when there is one.
pub fn token_header(token: Option<&str>) -> Vec<(&'static str, &str)> {
    token.map(|token| ("Token", token)).into_iter().collect()
}

/// Why a request got no complete answer.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be made: the server never saw the request.
    NotSent,
    /// Sent (perhaps partly) but no complete answer came back.
    Lost,
}

/// Sends `request` over a fresh connection to `address` and reads until the
/// server closes it: the status and body of a complete answer.
pub async fn exchange(address: &str, request: &[u8]) -> Result<(u16, Vec<u8>), Failure> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|_| Failure::NotSent)?;
    stream.write_all(request).await.map_err(|_| Failure::Lost)?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|_| Failure::Lost)?;
    let (status, body) = parse_response(&raw).ok_or(Failure::Lost)?;
    Ok((status, body.to_vec()))
}

/// Sends `request` over a fresh connection to `address` and reads until the
/// server closes it: the head of the answer (status line and headers).
pub async fn exchange_head(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(REQUEST_LIMIT, stream.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("read");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    String::from_utf8(raw[..head_end].to_vec()).expect("an ASCII head")
}

/// The value of header `name` in an answer's `head`.
pub fn header_value<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Status and body of a complete HTTP/1.1 answer (interim 1xx answers
/// skipped); `None` when it is cut short.
pub fn parse_response(mut raw: &[u8]) -> Option<(u16, &[u8])> {
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

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
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
pub async fn try_call(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = request(method, path, address, &token_header(token), &body);
    let answer = tokio::time::timeout(REQUEST_LIMIT, exchange(address, request.as_bytes()))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung for {REQUEST_LIMIT:?}"));
    let outcome = match answer {
        Ok((status, body)) => {
            let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
                panic!(
                    "{method} {path}: {status} with a body that is not JSON: {}",
                    String::from_utf8_lossy(&body)
                )
            });
            Outcome::Answered { status, body }
        }
        Err(Failure::NotSent) => Outcome::NotSent,
        Err(Failure::Lost) => Outcome::Lost,
    };
    (outcome, started.elapsed())
}
