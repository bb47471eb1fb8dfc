//! What every account error carries, and accounts and sessions across a
//! restart.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::accounts::{
    assert_token_invalid, assert_token_valid, login_ok, logout, refresh, sign_up, text,
};
use crate::support::api::{
    full_sign_up_body, push_token, registration, sign_up_body, with, LOGOUT, PASSWORD, RING,
};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn account_errors_carry_only_message_and_field(app: TestApp) {
    let alice = app.user("alice_1").await;
    let replies = [
        (sign_up(&app, json!({})).await, Some("username")),
        (
            sign_up(&app, sign_up_body("alice_1")).await,
            Some("username"),
        ),
        (
            sign_up(&app, with(sign_up_body("bob_1234"), "apikey", json!("x"))).await,
            Some("apikey"),
        ),
        (app.login("alice_1", "wrong_pass1").await, None),
        (refresh(&app, "garbage").await, None),
        (app.post_anonymous(LOGOUT, json!({})).await, None),
        (
            logout(&app, "bob_1234", &alice.token).await,
            Some("username"),
        ),
    ];
    for (reply, field) in replies {
        let object = reply.body.as_object().expect("an object");
        assert!(object["message"].is_string(), "{}", reply.body);
        assert!(
            object.keys().all(|k| k == "message" || k == "field"),
            "extra keys: {}",
            reply.body
        );
        if let Some(value) = object.get("field") {
            assert_eq!(Some(value.as_str().unwrap()), field, "{}", reply.body);
        }
    }
}

#[every_backend]
async fn accounts_and_sessions_survive_a_restart(app: TestApp) {
    let id = sign_up(&app, full_sign_up_body("alice_1", 3)).await.body["id"].clone();
    let first = login_ok(&app, "alice_1", PASSWORD).await;
    let token = text(&first, "token");
    let second = login_ok(&app, "alice_1", PASSWORD).await;
    app.post(RING, &token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);

    let app = app.restart().await;

    let reply = app.get(RING, &token).await;
    reply.assert_success_list();
    assert_eq!(reply.body[0]["push_token"], push_token(1));
    assert_eq!(reply.body[0]["id"], id);
    assert_eq!(login_ok(&app, "alice_1", PASSWORD).await["id"], id);
    assert_eq!(
        login_ok(&app, "user3@example.com", PASSWORD).await["id"],
        id
    );
    let rotated = refresh(&app, &text(&second, "reflash_key")).await;
    rotated.assert_success(StatusCode::CREATED);
    assert_token_valid(&app, &text(&rotated.body, "token")).await;
    sign_up(&app, sign_up_body("alice_1"))
        .await
        .assert_error(StatusCode::CONFLICT, "username exist");
    logout(&app, "alice_1", &token)
        .await
        .assert_success(StatusCode::OK);
    assert_token_invalid(&app, &token).await;
}
