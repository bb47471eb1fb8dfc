//! Refresh: a refresh key traded once for a new session, retiring the old
//! one.

use axum::http::StatusCode;
use pushtoken::unix_now;
use serde_json::json;

use crate::support::accounts::{
    assert_session_issued, assert_token_invalid, assert_token_valid, login_ok, refresh, text, DAY,
};
use crate::support::api::{push_token, registration, FAMILIES, PASSWORD, REFRESH};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn refresh_answers_like_login_with_a_new_token_and_key(app: TestApp) {
    let alice = app.user("alice_1").await;
    let before = unix_now();
    let reply = refresh(&app, &alice.reflash_key).await;
    let after = unix_now();
    reply.assert_success(StatusCode::CREATED);
    assert_session_issued(&reply.body, alice.id, before, after, 30 * DAY);
    assert_ne!(text(&reply.body, "token"), alice.token);
    assert_ne!(text(&reply.body, "reflash_key"), alice.reflash_key);
    assert_token_valid(&app, &text(&reply.body, "token")).await;
}

#[every_backend]
async fn refresh_retires_the_old_token_and_key(app: TestApp) {
    let alice = app.user("alice_1").await;
    let first = refresh(&app, &alice.reflash_key).await.body;
    assert_token_invalid(&app, &alice.token).await;
    assert_token_valid(&app, &text(&first, "token")).await;
    // The new key rotates again, once.
    let second = refresh(&app, &text(&first, "reflash_key")).await;
    second.assert_success(StatusCode::CREATED);
    assert_eq!(second.body["id"], alice.id);
    assert_token_invalid(&app, &text(&first, "token")).await;
    assert_token_valid(&app, &text(&second.body, "token")).await;
    // A retired key works no more (and ends its login: see below).
    refresh(&app, &text(&first, "reflash_key"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    refresh(&app, &alice.reflash_key)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
}

#[every_backend]
async fn refresh_with_unknown_key_is_401_invalid_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    for key in [
        "garbage".to_owned(),
        "".into(),
        "0".repeat(64),
        alice.token.clone(),
    ] {
        let reply = refresh(&app, &key).await;
        assert_eq!(
            reply.body["message"], "invalid token",
            "{key:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    // None of those touched the real session.
    assert_token_valid(&app, &alice.token).await;
    refresh(&app, &alice.reflash_key)
        .await
        .assert_success(StatusCode::CREATED);
}

#[every_backend]
async fn refresh_without_reflash_key_is_undefined_reflash_key(app: TestApp) {
    let alice = app.user("alice_1").await;
    for body in [
        json!({}),
        json!({ "reflash_key": null }),
        json!({ "token": alice.token }),
    ] {
        app.post_anonymous(REFRESH, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "undefined reflash_key");
    }
    for value in [json!(123), json!([alice.reflash_key])] {
        app.post_anonymous(REFRESH, json!({ "reflash_key": value }))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "reflash_key format error");
    }
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn refresh_keeps_other_sessions_and_push_tokens(app: TestApp) {
    let alice = app.user("alice_1").await;
    let other = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    for base in FAMILIES {
        app.post(base, &alice.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
    }
    let next = refresh(&app, &alice.reflash_key).await;
    next.assert_success(StatusCode::CREATED);
    assert_token_valid(&app, &other).await;
    for base in FAMILIES {
        let reply = app.get(base, &text(&next.body, "token")).await;
        assert_eq!(
            reply.body[0]["push_token"],
            push_token(1),
            "{base}: {}",
            reply.body
        );
    }
}

#[every_backend]
async fn a_reused_refresh_key_revokes_every_session_of_its_login(app: TestApp) {
    let alice = app.user("alice_1").await;
    let other_login = login_ok(&app, "alice_1", PASSWORD).await;
    let rotated = refresh(&app, &alice.reflash_key).await.body;
    let again = refresh(&app, &text(&rotated, "reflash_key")).await.body;
    // The first key again: someone else has it.
    refresh(&app, &alice.reflash_key)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    assert_token_invalid(&app, &text(&again, "token")).await;
    refresh(&app, &text(&again, "reflash_key"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // Another password login of the same user is not its descendant.
    assert_token_valid(&app, &text(&other_login, "token")).await;
    refresh(&app, &text(&other_login, "reflash_key"))
        .await
        .assert_success(StatusCode::CREATED);
}

#[every_backend]
async fn refresh_never_extends_a_login_past_the_session_max_age(app: TestApp) {
    let app = app
        .with_flags(&["--session-ttl", "1s", "--session-max-age", "2s"])
        .await;
    app.sign_up("alice_1").await;
    let login_at = unix_now();
    let login = login_ok(&app, "alice_1", PASSWORD).await;
    let rotated = refresh(&app, &text(&login, "reflash_key")).await;
    rotated.assert_success(StatusCode::CREATED);
    let time = rotated.body["time"].as_i64().unwrap();
    assert!(
        time <= login_at + 3,
        "expires at {time}, login at {login_at}"
    );
    // Past the login's two seconds, its refresh key is dead too.
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    refresh(&app, &text(&rotated.body, "reflash_key"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    login_ok(&app, "alice_1", PASSWORD).await;
}
