//! The request log line of the real binary: the request id that the answer
//! carries (never a client's unusable one), and the client's address (the
//! one a trusted proxy forwards).

use crate::support::every_database;
use crate::support::server::{command, Server, ServerLog};
use crate::support::wire::{exchange_head, header_value, request};

/// The binary on `database_url` at log level info, with these settings,
/// keeping its whole log.
async fn logged(database_url: &str, env: &[(&str, &str)]) -> (Server, ServerLog) {
    let mut cmd = command(database_url);
    cmd.env("RUST_LOG", "info");
    for (key, value) in env {
        cmd.env(key, value);
    }
    Server::spawn_logged(cmd).await
}

/// `GET /nowhere` (a 404, logged at info) with these headers; the answer's
/// `x-request-id`.
async fn get_nowhere(server: &Server, headers: &[(&str, &str)]) -> String {
    let head = exchange_head(
        &server.address,
        request("GET", "/nowhere", &server.address, headers, "").as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    header_value(&head, "x-request-id")
        .expect("every answer carries x-request-id")
        .to_owned()
}

/// The log's request line ("answered") for request id `id`.
fn answered_line<'l>(lines: &'l [String], id: &str) -> &'l str {
    lines
        .iter()
        .find(|line| line.contains(id) && line.contains("answered"))
        .unwrap_or_else(|| panic!("a request line with {id} in:\n{}", lines.join("\n")))
}

#[every_database]
async fn the_log_shows_the_request_id_the_answer_carries_never_an_unusable_one(database_url: &str) {
    let (server, log) = logged(database_url, &[]).await;
    let unusable = format!("refused id {}", "Qz".repeat(5_000));
    let made = get_nowhere(&server, &[("X-Request-Id", &unusable)]).await;
    assert_ne!(made, unusable);
    assert!(made.len() <= 64, "{made}");
    let kept = get_nowhere(&server, &[("X-Request-Id", "client-id-42")]).await;
    assert_eq!(kept, "client-id-42");
    server.stop().await;
    let lines = log.lines().await;
    answered_line(&lines, &made);
    answered_line(&lines, "client-id-42");
    assert!(
        !lines.iter().any(|line| line.contains("QzQzQzQz")),
        "the unusable id reached the log"
    );
}

#[every_database]
async fn the_log_names_the_client_a_trusted_proxy_forwards(database_url: &str) {
    // The test connects from 127.0.0.1: as a trusted proxy, then not.
    let forwarded = [("X-Forwarded-For", "192.0.2.1, 203.0.113.77")];
    let (server, log) = logged(database_url, &[("PUSHTOKEN_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let through_proxy = get_nowhere(&server, &forwarded).await;
    let direct = get_nowhere(&server, &[]).await;
    server.stop().await;
    let lines = log.lines().await;
    let line = answered_line(&lines, &through_proxy);
    assert!(line.contains("203.0.113.77"), "{line}");
    assert!(!line.contains("192.0.2.1"), "{line}");
    assert!(answered_line(&lines, &direct).contains("127.0.0.1"));

    let (server, log) = logged(database_url, &[]).await;
    let not_trusted = get_nowhere(&server, &forwarded).await;
    server.stop().await;
    let lines = log.lines().await;
    let line = answered_line(&lines, &not_trusted);
    assert!(line.contains("127.0.0.1"), "{line}");
    assert!(!line.contains("203.0.113.77"), "{line}");
}
