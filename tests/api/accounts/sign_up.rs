//! Sign-up: the accounts it makes, taken usernames, emails and phones, a
//! refused sign-up leaving nothing behind, and how the password is kept.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::accounts::{login_ok, sign_up};
use crate::support::api::{full_sign_up_body, sign_up_body, with, API_KEY, PASSWORD, SIGN_UP};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn sign_up_returns_201_with_the_new_id(app: TestApp) {
    let reply = app
        .post_anonymous(
            "/v1/api/user",
            json!({ "username": "alice_1", "password": PASSWORD, "apikey": API_KEY }),
        )
        .await;
    reply.assert_success(StatusCode::CREATED);
    assert!(reply.body["id"].as_i64().unwrap() > 0);
}

#[every_backend]
async fn sign_up_gives_each_account_its_own_id_that_login_reports(app: TestApp) {
    let alice = app.sign_up("alice_1").await;
    let bob = app.sign_up("bob_123").await;
    assert_ne!(alice, bob);
    assert_eq!(login_ok(&app, "alice_1", PASSWORD).await["id"], alice);
    assert_eq!(login_ok(&app, "bob_123", PASSWORD).await["id"], bob);
}

#[every_backend]
async fn sign_up_is_disabled_when_no_api_key_is_configured(app: TestApp) {
    app.sign_up("alice_1").await;
    let keyless = app.another_instance_with(&["--api-key", ""]).await;
    for key in [API_KEY, "", "anything"] {
        let body = with(sign_up_body("bob_1234"), "apikey", json!(key));
        let reply = keyless.post_anonymous(SIGN_UP, body).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{key:?}: {}",
            reply.body
        );
        assert_eq!(
            reply.body["message"], "apikey error",
            "{key:?}: {}",
            reply.body
        );
    }
    // Only sign-up is disabled: existing accounts still log in.
    keyless
        .login("alice_1", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
    // Nothing was created by the refused sign-ups.
    app.sign_up("bob_1234").await;
}

#[every_backend]
async fn sign_up_with_taken_username_is_409_username_exist(app: TestApp) {
    app.sign_up("alice_1").await;
    let again = with(sign_up_body("alice_1"), "password", json!("other_pass1"));
    sign_up(&app, again)
        .await
        .assert_error(StatusCode::CONFLICT, "username exist");
    // The account is untouched: the old password still works, the new does not.
    login_ok(&app, "alice_1", PASSWORD).await;
    app.login("alice_1", "other_pass1")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
}

#[every_backend]
async fn sign_up_with_taken_email_is_409_email_exist(app: TestApp) {
    let body = with(
        sign_up_body("alice_1"),
        "email",
        json!("shared@example.com"),
    );
    sign_up(&app, body)
        .await
        .assert_success(StatusCode::CREATED);
    let body = with(
        sign_up_body("bob_1234"),
        "email",
        json!("shared@example.com"),
    );
    sign_up(&app, body)
        .await
        .assert_error(StatusCode::CONFLICT, "email exist");
    app.login("bob_1234", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
}

#[every_backend]
async fn sign_up_with_taken_phone_is_409_phone_exist(app: TestApp) {
    let body = with(sign_up_body("alice_1"), "phone", json!("+8613800138000"));
    sign_up(&app, body)
        .await
        .assert_success(StatusCode::CREATED);
    let body = with(sign_up_body("bob_1234"), "phone", json!("+8613800138000"));
    sign_up(&app, body)
        .await
        .assert_error(StatusCode::CONFLICT, "phone exist");
    app.login("bob_1234", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
}

#[every_backend]
async fn sign_up_with_taken_username_and_email_reports_the_username(app: TestApp) {
    sign_up(&app, full_sign_up_body("alice_1", 1))
        .await
        .assert_success(StatusCode::CREATED);
    sign_up(&app, full_sign_up_body("alice_1", 1))
        .await
        .assert_error(StatusCode::CONFLICT, "username exist");
    let email_and_phone = full_sign_up_body("bob_1234", 1);
    sign_up(&app, email_and_phone)
        .await
        .assert_error(StatusCode::CONFLICT, "email exist");
}

#[every_backend]
async fn sign_up_checks_the_body_before_whether_the_username_is_taken(app: TestApp) {
    app.sign_up("alice_1").await;
    let wrong_key = with(sign_up_body("alice_1"), "apikey", json!("wrong"));
    sign_up(&app, wrong_key)
        .await
        .assert_error(StatusCode::FORBIDDEN, "apikey error");
    let bad_code = with(sign_up_body("alice_1"), "code", json!("12"));
    sign_up(&app, bad_code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "code error");
}

#[every_backend]
async fn rejected_sign_up_creates_nothing(app: TestApp) {
    let rejected = [
        (
            with(sign_up_body("alice_1"), "code", json!("12345")),
            StatusCode::BAD_REQUEST,
            "code error",
        ),
        (
            with(sign_up_body("alice_1"), "apikey", json!("wrong")),
            StatusCode::FORBIDDEN,
            "apikey error",
        ),
        (
            with(sign_up_body("alice_1"), "phone", json!("12")),
            StatusCode::BAD_REQUEST,
            "phone error",
        ),
    ];
    for (body, status, message) in rejected {
        sign_up(&app, body).await.assert_error(status, message);
        app.login("alice_1", PASSWORD)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
    // A conflict on the email leaves neither the username nor the phone taken.
    let bob = with(sign_up_body("bob_1234"), "email", json!("bob@example.com"));
    let bob_id = sign_up(&app, bob).await.body["id"].clone();
    let clash = with(
        with(sign_up_body("alice_1"), "email", json!("bob@example.com")),
        "phone",
        json!("+8613800138000"),
    );
    sign_up(&app, clash)
        .await
        .assert_error(StatusCode::CONFLICT, "email exist");
    app.login("alice_1", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    app.login("+8613800138000", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    assert_eq!(
        login_ok(&app, "bob@example.com", PASSWORD).await["id"],
        bob_id
    );
    // The same username and phone are free afterwards.
    let fixed = with(
        with(sign_up_body("alice_1"), "email", json!("alice@example.com")),
        "phone",
        json!("+8613800138000"),
    );
    let reply = sign_up(&app, fixed).await;
    reply.assert_success(StatusCode::CREATED);
    assert_eq!(
        login_ok(&app, "alice_1", PASSWORD).await["id"],
        reply.body["id"]
    );
    assert_eq!(
        login_ok(&app, "+8613800138000", PASSWORD).await["id"],
        reply.body["id"]
    );
}

#[every_backend]
async fn sign_up_stores_the_password_as_argon2id_never_in_clear(app: TestApp) {
    app.sign_up("alice_1").await;
    let stored = app
        .state
        .store
        .find_credentials("alice_1")
        .await
        .expect("store answers")
        .expect("the account exists");
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "not an Argon2id hash: {}",
        stored.password_hash
    );
    assert!(!stored.password_hash.contains(PASSWORD));
}
