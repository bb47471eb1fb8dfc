//! Slow, silent and oversized clients against the real binary: each is cut
//! off or refused, and the server goes on serving others.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::api::{sign_up_body, SIGN_UP};
use crate::support::server::{sqlite_in, Server};

/// Reads until the server closes the connection; what it sent, or `None`
/// when it was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

async fn healthy(server: &Server) {
    let (status, body) = server.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_client_that_stalls_in_its_request_head_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let mut half = TcpStream::connect(&server.address).await.unwrap();
    half.write_all(b"POST /v1/api/user/login HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    // Slowloris: one byte of the head every half second, never finishing.
    let mut trickle = TcpStream::connect(&server.address).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickling = tokio::spawn(async move {
        for _ in 0..40 {
            if trickle.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        trickle
    });
    let started = Instant::now();
    let answer = closed_within(&mut half, Duration::from_secs(15))
        .await
        .expect("a stalled request head is cut off within 15 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "cut off after {waited:?}, before the head timeout"
    );
    if !answer.is_empty() {
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    let mut trickle = trickling.await.unwrap();
    let closed = closed_within(&mut trickle, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "a head trickled byte by byte is cut off by the head timeout"
    );
    eprintln!("stalled head cut off after {waited:?}");
    healthy(&server).await;
    server.stop().await;
}

/// The head timeout's promise (`server.rs`: "a client that has not sent its
/// request head … by then is cut off") for clients that send nothing, or
/// only (part of) the HTTP/2 preface, and then wait.
#[tokio::test]
async fn a_client_that_sends_nothing_or_only_an_http2_preface_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let mut silent = Vec::new();
    for opening in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        stream.write_all(opening).await.unwrap();
        silent.push((opening.escape_ascii().to_string(), stream));
    }
    let started = Instant::now();
    let mut kept_open = Vec::new();
    for (opening, mut stream) in silent {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        let closed = closed_within(&mut stream, left).await;
        eprintln!(
            "silent client {opening:?}: closed {} after {:?}",
            closed.is_some(),
            started.elapsed()
        );
        if closed.is_none() {
            kept_open.push(opening);
        }
    }
    healthy(&server).await;
    server.stop().await;
    assert!(
        kept_open.is_empty(),
        "clients that sent only these openings were still connected after 15 s: {kept_open:?}"
    );
}

#[tokio::test]
async fn a_huge_request_header_is_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let big = |size: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        )
    };
    let many: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        ("a 200 KiB header", big(200 * 1024)),
        ("a 2 MiB header", big(2 * 1024 * 1024)),
        (
            "5000 small headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n"),
        ),
    ];
    let mut accepted = Vec::new();
    for (what, head) in cases {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        // The server may close before it has read everything: ignore EPIPE.
        let _ = stream.write_all(head.as_bytes()).await;
        let answer = closed_within(&mut stream, Duration::from_secs(15))
            .await
            .expect("the connection ends");
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .unwrap_or("closed")
            .to_owned();
        eprintln!("{what}: {status}");
        if !["431", "400", "closed"].contains(&status.as_str()) {
            accepted.push(format!("{what} answered {status}"));
        }
        // Whatever the answer, the server is still up.
        healthy(&server).await;
    }
    server.stop().await;
    assert!(
        accepted.is_empty(),
        "oversized heads were served: {accepted:?}"
    );
}

#[tokio::test]
async fn many_idle_connections_do_not_stop_a_normal_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        // Some say nothing, some stall in their head.
        if i % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        idle.push(stream);
    }
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        server.call("POST", SIGN_UP, None, Some(sign_up_body("alice_1"))),
    )
    .await
    .expect("served within 5 s beside 200 idle connections");
    assert_eq!(status, 201, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    healthy(&server).await;
    drop(idle);
    server.stop().await;
}
