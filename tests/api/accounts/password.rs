//! Password change (`PUT /v1/api/user/password`): the new password follows
//! sign-up's rules, the current one is checked like a login, and every
//! other session of the user ends.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::accounts::{assert_token_invalid, assert_token_valid, login_ok, refresh, text};
use crate::support::api::PASSWORD;
use crate::support::{every_backend, Reply, TestApp};

const PASSWORD_ROUTE: &str = "/v1/api/user/password";
const NEW_PASSWORD: &str = "new_pass_22";

async fn change(app: &TestApp, token: &str, body: Value) -> Reply {
    app.request(Method::PUT, PASSWORD_ROUTE, &[("token", token)], Some(body))
        .await
}

fn new_password() -> Value {
    json!({ "password": NEW_PASSWORD, "oldpassword": PASSWORD })
}

#[every_backend]
async fn a_password_change_revokes_every_other_session_and_keeps_the_callers(app: TestApp) {
    let alice = app.user("alice_1").await;
    let other = login_ok(&app, "alice_1", PASSWORD).await;
    let reply = change(&app, &alice.token, new_password()).await;
    reply.assert_success(StatusCode::OK);
    assert_eq!(reply.body, json!({ "message": "success" }));
    assert_token_valid(&app, &alice.token).await;
    assert_token_invalid(&app, &text(&other, "token")).await;
    refresh(&app, &text(&other, "reflash_key"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    app.login("alice_1", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    login_ok(&app, "alice_1", NEW_PASSWORD).await;
    // The caller's own refresh key goes on working.
    refresh(&app, &alice.reflash_key)
        .await
        .assert_success(StatusCode::CREATED);
}

#[every_backend]
async fn a_password_change_body_is_checked_password_first_then_oldpassword(app: TestApp) {
    let alice = app.user("alice_1").await;
    for (body, message) in [
        (json!({}), "undefined password"),
        (
            json!({ "password": null, "oldpassword": 1 }),
            "undefined password",
        ),
        (
            json!({ "password": 12_345_678, "oldpassword": PASSWORD }),
            "password format error",
        ),
        (
            json!({ "password": "short_1", "oldpassword": PASSWORD }),
            "password length error",
        ),
        (
            json!({ "password": "with space_1", "oldpassword": PASSWORD }),
            "password error",
        ),
        (json!({ "password": NEW_PASSWORD }), "undefined oldpassword"),
        (
            json!({ "password": NEW_PASSWORD, "oldpassword": 7 }),
            "oldpassword format error",
        ),
        (
            json!({ "password": NEW_PASSWORD, "oldpassword": "not_it_123" }),
            "oldpassword error",
        ),
    ] {
        change(&app, &alice.token, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, message);
    }
    change(&app, "", new_password())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "no token");
    change(&app, "not-a-session", new_password())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // Nothing changed.
    login_ok(&app, "alice_1", PASSWORD).await;
}

#[every_backend]
async fn a_wrong_oldpassword_counts_as_a_failed_login(app: TestApp) {
    let app = app.with_flags(&["--login-max-failures", "3"]).await;
    let alice = app.user("alice_1").await;
    let wrong = json!({ "password": NEW_PASSWORD, "oldpassword": "not_it_123" });
    for _ in 0..3 {
        change(&app, &alice.token, wrong.clone())
            .await
            .assert_error(StatusCode::BAD_REQUEST, "oldpassword error");
    }
    change(&app, &alice.token, new_password())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    app.login("alice_1", PASSWORD)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
}
