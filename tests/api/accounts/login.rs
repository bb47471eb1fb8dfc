//! Login: the session it issues, by username, email or phone, and the
//! answers to wrong credentials and malformed bodies.

use axum::http::{Method, StatusCode};
use pushtoken::unix_now;
use serde_json::json;

use crate::support::accounts::{
    assert_session_issued, assert_token_valid, login_ok, sign_up, text, DAY,
};
use crate::support::api::{full_sign_up_body, registration, LOGIN, PASSWORD, RING};
use crate::support::{every_backend, Reply, TestApp};

#[every_backend]
async fn login_returns_the_five_vendor_keys_and_success(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let reply = app.login("alice_1", PASSWORD).await;
    reply.assert_success(StatusCode::CREATED);
    assert_eq!(reply.body["id"], id);
    assert!(reply.body["token"].as_str().unwrap().len() >= 32);
    assert!(reply.body["reflash_key"].as_str().unwrap().len() >= 32);
    assert!(reply.body["time"].as_i64().unwrap() > pushtoken::unix_now());
    assert_eq!(reply.body["logout_status"], 0);
    let token = reply.body["token"].as_str().unwrap();
    assert_token_valid(&app, token).await;
}

#[every_backend]
async fn login_session_expires_30_days_from_now_by_default(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let before = unix_now();
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    let after = unix_now();
    assert_session_issued(&body, id, before, after, 30 * DAY);
    assert!(body.get("data").is_none(), "no envelope: {body}");
}

#[every_backend]
async fn login_expiry_follows_the_session_ttl_setting(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let app = app.with_flags(&["--session-ttl", "1h"]).await;
    let before = unix_now();
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    let after = unix_now();
    assert_session_issued(&body, id, before, after, 3600);
}

#[every_backend]
async fn login_by_email_or_phone_opens_the_same_account(app: TestApp) {
    let body = full_sign_up_body("alice_1", 7);
    let email = text(&body, "email");
    let phone = text(&body, "phone");
    let id = sign_up(&app, body).await.body["id"].as_i64().expect("id");
    let other = app.user("bob_1234").await;
    app.post(RING, &other.token, registration(2)).await;
    for login in ["alice_1", email.as_str(), phone.as_str()] {
        let body = login_ok(&app, login, PASSWORD).await;
        assert_eq!(body["id"], id, "login as {login}");
        let reply = app.get(RING, &text(&body, "token")).await;
        reply.assert_success_list();
        assert_eq!(reply.body, json!([]), "login as {login} sees alice's rows");
    }
}

#[every_backend]
async fn login_with_wrong_password_or_unknown_user_is_the_same_401(app: TestApp) {
    sign_up(&app, full_sign_up_body("alice_1", 1))
        .await
        .assert_success(StatusCode::CREATED);
    let attempts = [
        ("alice_1", "wrong_pass1"),
        ("alice_1", ""),
        ("alice_1", &PASSWORD.to_uppercase()),
        ("nobody_1", PASSWORD),
        ("nobody@example.com", PASSWORD),
        ("+8613900000000", PASSWORD),
        ("", PASSWORD),
        ("user1@example.com", "wrong_pass1"),
    ];
    let mut first: Option<Reply> = None;
    for (username, password) in attempts {
        let reply = app.login(username, password).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "username or password error");
        if let Some(first) = &first {
            assert_eq!(reply.body, first.body, "{username}/{password}");
        } else {
            first = Some(reply);
        }
    }
}

#[every_backend]
async fn login_without_username_or_password_is_undefined_field(app: TestApp) {
    app.sign_up("alice_1").await;
    let cases = [
        (json!({}), "undefined username"),
        (json!({ "password": PASSWORD }), "undefined username"),
        (
            json!({ "username": null, "password": PASSWORD }),
            "undefined username",
        ),
        (json!({ "username": "alice_1" }), "undefined password"),
        (
            json!({ "username": "alice_1", "password": null }),
            "undefined password",
        ),
    ];
    for (body, message) in cases {
        let reply = app.post_anonymous(LOGIN, body.clone()).await;
        assert_eq!(reply.body["message"], message, "{body}: {}", reply.body);
        reply.assert_error(StatusCode::BAD_REQUEST, message);
    }
}

#[every_backend]
async fn login_with_field_of_wrong_json_type_is_format_error(app: TestApp) {
    app.sign_up("alice_1").await;
    let cases = [
        (
            json!({ "username": 12345678, "password": PASSWORD }),
            "username format error",
        ),
        (
            json!({ "username": ["alice_1"], "password": PASSWORD }),
            "username format error",
        ),
        (
            json!({ "username": "alice_1", "password": 12345678 }),
            "password format error",
        ),
        (
            json!({ "username": "alice_1", "password": true }),
            "password format error",
        ),
    ];
    for (body, message) in cases {
        let reply = app.post_anonymous(LOGIN, body.clone()).await;
        assert_eq!(reply.body["message"], message, "{body}: {}", reply.body);
        reply.assert_error(StatusCode::BAD_REQUEST, message);
    }
}

#[every_backend]
async fn login_ignores_unknown_fields_and_content_type(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let body = json!({
        "username": "alice_1", "password": PASSWORD,
        "os_push_version": "2.0", "apikey": "whatever", "id": 999,
    });
    for content_type in [
        None,
        Some("application/json; charset=UTF-8"),
        Some("text/plain"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| vec![("content-type", c)])
            .unwrap_or_default();
        let reply = app
            .request(Method::POST, LOGIN, &headers, Some(body.clone()))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["id"], id, "{content_type:?}");
    }
}

#[every_backend]
async fn login_with_a_nul_in_the_username_is_401_not_a_database_error(app: TestApp) {
    app.sign_up("alice_1").await;
    for name in ["alice_1\u{0}", "\u{0}", "a\u{0}@x"] {
        let reply = app.login(name, PASSWORD).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
}
