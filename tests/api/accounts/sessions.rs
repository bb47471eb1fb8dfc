//! Session tokens: several at once, random and never repeated, read from
//! the `token` header or a bearer token, refused when missing, unknown or
//! expired, and never stored in clear.

use std::path::Path;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::accounts::{
    assert_token_invalid, assert_token_valid, login_ok, logout, refresh, text,
};
use crate::support::api::{push_token, registration, FAMILIES, MESSAGE, PASSWORD, RING};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn a_user_may_hold_several_sessions_at_once(app: TestApp) {
    app.sign_up("alice_1").await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(login_ok(&app, "alice_1", PASSWORD).await);
    }
    for session in &sessions {
        assert_token_valid(&app, &text(session, "token")).await;
    }
    // What one phone registers, the others see.
    let first = text(&sessions[0], "token");
    app.post(RING, &first, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app.get(RING, &text(&sessions[2], "token")).await;
    assert_eq!(reply.body[0]["push_token"], push_token(1), "{}", reply.body);
}

#[every_backend]
async fn session_tokens_and_keys_are_random_and_never_repeat(app: TestApp) {
    app.sign_up("alice_1").await;
    app.sign_up("bob_1234").await;
    let mut secrets = Vec::new();
    for username in ["alice_1", "alice_1", "alice_1", "bob_1234", "bob_1234"] {
        let body = login_ok(&app, username, PASSWORD).await;
        secrets.push(text(&body, "token"));
        secrets.push(text(&body, "reflash_key"));
    }
    for secret in &secrets {
        // At least 128 random bits: 32 hex digits or 22 base64 characters.
        assert!(secret.len() >= 22, "short secret {secret}");
        assert!(
            !secret.contains("alice") && !secret.contains("bob"),
            "{secret}"
        );
    }
    let mut unique = secrets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), secrets.len(), "a secret repeats: {secrets:?}");
}

#[every_backend]
async fn session_token_is_read_from_token_header_in_any_case_or_bearer(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_1234").await;
    app.post(RING, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let bearer = format!("Bearer {}", alice.token);
    let bearer_lower = format!("bearer {}", alice.token);
    let forms = [
        ("token", alice.token.as_str()),
        ("Token", alice.token.as_str()),
        ("TOKEN", alice.token.as_str()),
        ("Authorization", bearer.as_str()),
        ("authorization", bearer_lower.as_str()),
    ];
    for (name, value) in forms {
        let reply = app.request(Method::GET, RING, &[(name, value)], None).await;
        reply.assert_success_list();
        assert_eq!(
            reply.body.as_array().unwrap().len(),
            1,
            "{name}: {}",
            reply.body
        );
        assert_eq!(reply.body[0]["id"], alice.id, "{name}");
        assert_eq!(reply.body[0]["push_token"], push_token(1), "{name}");
    }
    // The header names the caller: bob's bearer token shows bob's (empty) list.
    let bob_bearer = format!("Bearer {}", bob.token);
    let reply = app
        .request(Method::GET, RING, &[("Authorization", &bob_bearer)], None)
        .await;
    assert_eq!(reply.body, json!([]));
}

#[every_backend]
async fn request_without_a_session_token_is_401_no_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    let cases: [&[(&str, &str)]; 6] = [
        &[],
        &[("token", "")],
        &[("Authorization", "Bearer")],
        &[("Authorization", "Bearer ")],
        &[("Authorization", "Basic YWxpY2VfMTpwYXNzd29yZF8x")],
        &[("x-token", &alice.token)],
    ];
    for base in FAMILIES {
        for headers in cases {
            let reply = app.request(Method::GET, base, headers, None).await;
            assert_eq!(
                reply.body["message"], "no token",
                "{headers:?}: {}",
                reply.body
            );
            reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
        }
    }
}

#[every_backend]
async fn unknown_session_token_is_401_invalid_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    let mut altered = alice.token.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    let bad = [
        "garbage".to_owned(),
        "0".repeat(64),
        altered,
        alice.token[..alice.token.len() / 2].to_owned(),
        format!("{}{}", alice.token, alice.token),
        // A refresh key is not a session token.
        alice.reflash_key.clone(),
    ];
    for token in &bad {
        for base in FAMILIES {
            let reply = app.get(base, token).await;
            assert_eq!(
                reply.body["message"], "invalid token",
                "{token}: {}",
                reply.body
            );
            reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
        }
        let bearer = format!("Bearer {token}");
        let reply = app
            .request(Method::GET, MESSAGE, &[("Authorization", &bearer)], None)
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn session_token_expires_after_the_configured_ttl(app: TestApp) {
    app.sign_up("alice_1").await;
    let app = app.with_flags(&["--session-ttl", "2s"]).await;
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    let token = text(&body, "token");
    assert_token_valid(&app, &token).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_token_invalid(&app, &token).await;
    let reply = app
        .request(Method::GET, MESSAGE, &[("Token", &token)], None)
        .await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    logout(&app, "alice_1", &token)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // A new login opens a new session.
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    assert_token_valid(&app, &text(&body, "token")).await;
}

#[every_backend]
async fn passwords_session_tokens_and_keys_are_never_stored_in_clear(app: TestApp) {
    let alice = app.user("alice_1").await;
    let second = login_ok(&app, "alice_1", PASSWORD).await;
    let rotated = refresh(&app, &text(&second, "reflash_key")).await;
    rotated.assert_success(StatusCode::CREATED);
    let secrets = [
        PASSWORD.to_owned(),
        alice.token.clone(),
        alice.reflash_key.clone(),
        text(&rotated.body, "token"),
        text(&rotated.body, "reflash_key"),
    ];
    let users = app.stored_text("users").await;
    assert_eq!(users.len(), 1);
    assert!(
        users[0].iter().any(|v| v == "alice_1"),
        "the read sees the data: {users:?}"
    );
    assert!(
        users[0].iter().any(|v| v.starts_with("$argon2id$")),
        "{users:?}"
    );
    let sessions = app.stored_text("sessions").await;
    assert_eq!(sessions.len(), 2, "two live sessions: {sessions:?}");
    assert!(
        sessions.iter().all(|row| !row.is_empty()),
        "text columns: {sessions:?}"
    );
    for value in users.iter().chain(&sessions).flatten() {
        for secret in &secrets {
            assert!(
                !value.contains(secret.as_str()),
                "{secret} stored in {value}"
            );
        }
    }
    // On SQLite, not in the file (or its journal) either.
    if let Some(dir) = app.db.sqlite_dir() {
        assert!(files_contain(&dir, b"alice_1"), "the scan sees the data");
        for secret in &secrets {
            assert!(!files_contain(&dir, secret.as_bytes()), "{secret} in clear");
        }
    }
}

/// Whether any file under `dir` contains `needle`.
fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).expect("read dir").any(|entry| {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_contain(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}
