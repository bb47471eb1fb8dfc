//! Logout: the vendor's (username and token in the body) and with the
//! token in a header; it revokes one session and deletes the user's push
//! tokens, and refuses anyone else's username.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::accounts::{
    assert_token_invalid, assert_token_valid, login_ok, logout, refresh, sign_up, text,
};
use crate::support::api::{
    registration, sign_up_body, with, FAMILIES, LOGOUT, MESSAGE, PASSWORD, RING,
};
use crate::support::push_tokens::rows;
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn logout_with_token_in_body_is_200_success_and_revokes_that_session(app: TestApp) {
    let alice = app.user("alice_1").await;
    let reply = logout(&app, &alice.username, &alice.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!({ "message": "success" }));
    assert_token_invalid(&app, &alice.token).await;
    // Logging out twice: the session is gone.
    logout(&app, &alice.username, &alice.token)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // Its refresh key is gone too.
    refresh(&app, &alice.reflash_key)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // The account is not: logging in again works.
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    assert_token_valid(&app, &text(&body, "token")).await;
}

#[every_backend]
async fn logout_keeps_the_users_other_sessions(app: TestApp) {
    let alice = app.user("alice_1").await;
    let second = login_ok(&app, "alice_1", PASSWORD).await;
    let bob = app.user("bob_1234").await;
    logout(&app, &alice.username, &alice.token)
        .await
        .assert_success(StatusCode::OK);
    assert_token_invalid(&app, &alice.token).await;
    assert_token_valid(&app, &text(&second, "token")).await;
    assert_token_valid(&app, &bob.token).await;
    // The other session can still rotate.
    refresh(&app, &text(&second, "reflash_key"))
        .await
        .assert_success(StatusCode::CREATED);
}

#[every_backend]
async fn logout_deletes_all_of_the_users_ring_and_message_push_tokens(app: TestApp) {
    let alice = app.user("alice_1").await;
    let alice_other_phone = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    let bob = app.user("bob_1234").await;
    for base in FAMILIES {
        for n in [1, 2] {
            app.post(base, &alice.token, registration(n))
                .await
                .assert_success(StatusCode::CREATED);
        }
        app.put(&format!("{base}/9"), &alice_other_phone, registration(3))
            .await
            .assert_success(StatusCode::CREATED);
        for n in [11, 12] {
            app.post(base, &bob.token, registration(n))
                .await
                .assert_success(StatusCode::CREATED);
        }
        assert_eq!(rows(&app, base, &alice_other_phone).await.len(), 3);
    }
    let mut bob_rows = Vec::new();
    for base in FAMILIES {
        bob_rows.push(app.get(base, &bob.token).await.body);
    }
    logout(&app, &alice.username, &alice.token)
        .await
        .assert_success(StatusCode::OK);
    for (i, base) in FAMILIES.into_iter().enumerate() {
        let reply = app.get(base, &alice_other_phone).await;
        reply.assert_success_list();
        assert_eq!(reply.body, json!([]), "{base}");
        let reply = app.get(base, &bob.token).await;
        assert_eq!(reply.body, bob_rows[i], "{base}: bob's rows are untouched");
        assert_eq!(reply.body.as_array().unwrap().len(), 2, "{base}");
    }
}

#[every_backend]
async fn logout_accepts_the_token_in_a_header_only(app: TestApp) {
    let alice = app.user("alice_1").await;
    let second = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    let third = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    app.post(RING, &third, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app
        .request(
            Method::POST,
            LOGOUT,
            &[("Token", &alice.token)],
            Some(json!({ "username": "alice_1" })),
        )
        .await;
    reply.assert_success(StatusCode::OK);
    assert_token_invalid(&app, &alice.token).await;
    assert_eq!(
        app.get(RING, &third).await.body,
        json!([]),
        "push tokens deleted"
    );
    let bearer = format!("Bearer {second}");
    let reply = app
        .request(
            Method::POST,
            LOGOUT,
            &[("Authorization", &bearer)],
            Some(json!({})),
        )
        .await;
    reply.assert_success(StatusCode::OK);
    assert_token_invalid(&app, &second).await;
    assert_token_valid(&app, &third).await;
}

#[every_backend]
async fn logout_with_a_header_token_and_no_body_is_success(app: TestApp) {
    let alice = app.user("alice_1").await;
    app.post(MESSAGE, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app
        .request(Method::POST, LOGOUT, &[("Token", &alice.token)], None)
        .await;
    reply.assert_success(StatusCode::OK);
    assert_token_invalid(&app, &alice.token).await;
    let again = app.login("alice_1", PASSWORD).await;
    let token = text(&again.body, "token");
    assert_eq!(app.get(MESSAGE, &token).await.body, json!([]));
}

#[every_backend]
async fn logout_accepts_the_email_or_phone_the_user_logs_in_with(app: TestApp) {
    let body = with(
        with(sign_up_body("alice_1"), "email", json!("alice@example.com")),
        "phone",
        json!("+8613800000000"),
    );
    sign_up(&app, body)
        .await
        .assert_success(StatusCode::CREATED);
    app.sign_up("bob_2222").await;
    for name in ["alice@example.com", "+8613800000000"] {
        let token = text(&login_ok(&app, name, PASSWORD).await, "token");
        let reply = app
            .post_anonymous(LOGOUT, json!({ "username": "bob_2222", "token": token }))
            .await;
        reply.assert_error(StatusCode::BAD_REQUEST, "username error");
        let reply = app
            .post_anonymous(LOGOUT, json!({ "username": name, "token": token }))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_token_invalid(&app, &token).await;
    }
}

#[every_backend]
async fn logout_with_another_username_is_400_username_error_and_changes_nothing(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_1234").await;
    app.post(RING, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    app.post(MESSAGE, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    for username in [bob.username.as_str(), "nobody_1"] {
        logout(&app, username, &alice.token)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "username error");
    }
    // A header token with a body naming someone else is refused the same way.
    let reply = app
        .request(
            Method::POST,
            LOGOUT,
            &[("token", &alice.token)],
            Some(json!({ "username": bob.username })),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "username error");
    assert_token_valid(&app, &alice.token).await;
    assert_token_valid(&app, &bob.token).await;
    for base in FAMILIES {
        let reply = app.get(base, &alice.token).await;
        assert_eq!(
            reply.body.as_array().unwrap().len(),
            1,
            "{base}: {}",
            reply.body
        );
    }
}

#[every_backend]
async fn logout_with_username_of_wrong_type_is_username_format_error(app: TestApp) {
    let alice = app.user("alice_1").await;
    let body = json!({ "username": 12345678, "token": alice.token });
    app.post_anonymous(LOGOUT, body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "username format error");
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn logout_without_any_token_is_401_no_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bodies = [
        json!({ "username": "alice_1" }),
        json!({}),
        json!({ "username": "alice_1", "token": "" }),
        json!({ "username": "alice_1", "token": null }),
    ];
    for body in bodies {
        let reply = app.post_anonymous(LOGOUT, body.clone()).await;
        assert_eq!(reply.body["message"], "no token", "{body}: {}", reply.body);
        reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
    }
    let reply = app.send_raw(Method::POST, LOGOUT, &[], Vec::new()).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn logout_with_unknown_token_is_401_invalid_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    app.post(RING, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    for token in [
        "garbage".to_owned(),
        "0".repeat(64),
        alice.reflash_key.clone(),
    ] {
        logout(&app, "alice_1", &token)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    assert_token_valid(&app, &alice.token).await;
    assert_eq!(rows(&app, RING, &alice.token).await.len(), 1);
}
