//! Accounts and sessions: the requests and checks the account tests share.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::api::{sign_up_body, with, LOGOUT, REFRESH, RING, SIGN_UP};
use super::{Reply, TestApp};

/// A day in seconds.
pub const DAY: i64 = 86_400;

/// `POST /v1/api/user` with `body`.
pub async fn sign_up(app: &TestApp, body: Value) -> Reply {
    app.post_anonymous(SIGN_UP, body).await
}

/// Logs in and asserts the login succeeded; returns the reply body.
pub async fn login_ok(app: &TestApp, login: &str, password: &str) -> Value {
    let reply = app.login(login, password).await;
    reply.assert_success(StatusCode::CREATED);
    reply.body
}

/// The vendor's logout: username and token in the body, no header.
pub async fn logout(app: &TestApp, username: &str, token: &str) -> Reply {
    app.post_anonymous(LOGOUT, json!({ "username": username, "token": token }))
        .await
}

/// Trades a refresh key for a new session.
pub async fn refresh(app: &TestApp, reflash_key: &str) -> Reply {
    app.post_anonymous(REFRESH, json!({ "reflash_key": reflash_key }))
        .await
}

/// Asserts that `token` opens a session: listing ring tokens answers 200
/// and an array.
pub async fn assert_token_valid(app: &TestApp, token: &str) {
    app.get(RING, token).await.assert_success_list();
}

/// Asserts that `token` is refused as `invalid token`.
pub async fn assert_token_invalid(app: &TestApp, token: &str) {
    let reply = app.get(RING, token).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
}

/// Asserts a login-like answer: message, id, token, key, expiry and status.
#[track_caller]
pub fn assert_session_issued(body: &Value, id: i64, before: i64, after: i64, ttl: i64) {
    assert_eq!(body["message"], "success", "body: {body}");
    assert_eq!(body["id"], id, "body: {body}");
    let token = body["token"].as_str().expect("token is a string");
    let key = body["reflash_key"]
        .as_str()
        .expect("reflash_key is a string");
    assert!(token.len() >= 32, "token too short: {token}");
    assert!(key.len() >= 32, "reflash_key too short: {key}");
    assert_ne!(token, key);
    let time = body["time"].as_i64().expect("time is an integer");
    assert!(
        (before + ttl..=after + ttl).contains(&time),
        "time {time} is not now + {ttl}s (now was {before}..={after})"
    );
    assert_eq!(body["logout_status"], 0, "body: {body}");
}

/// The string at `key` of a body.
pub fn text(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {body}"))
        .to_owned()
}

/// Signs `alice_1` up with `field` set to each of `values` in turn; each is
/// refused with 400 and `message`.
pub async fn assert_sign_up_refuses<V: Into<Value>>(
    app: &TestApp,
    field: &str,
    values: impl IntoIterator<Item = V>,
    message: &str,
) {
    for value in values {
        let value = value.into();
        let reply = sign_up(app, with(sign_up_body("alice_1"), field, value.clone())).await;
        assert_eq!(
            (reply.status, reply.body["message"].as_str()),
            (StatusCode::BAD_REQUEST, Some(message)),
            "{field}={value}: {}",
            reply.body
        );
    }
}
