//! Many requests at once on the same users, serials and push tokens, and
//! several server instances on one database. The database's constraints and
//! transactions keep the rules, so they hold across instances too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::support::api::{push_token, registration, CACHE_LIFETIME, FAMILIES, MESSAGE, RING};
use crate::support::push_tokens::rows;
use crate::support::{every_backend, TestApp, TestUser};

/// Every row of every user in `base`, checked against the invariants of the
/// API: one row per push token, unique serials per user, rows only in their
/// owner's list. Returns push token → (user id, serial).
async fn assert_invariants(
    app: &TestApp,
    users: &[TestUser],
    base: &str,
) -> HashMap<String, (i64, i64)> {
    let mut holders = HashMap::new();
    for user in users {
        let reply = app.get(base, &user.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        let mut serials = HashSet::new();
        for row in reply.body.as_array().unwrap() {
            assert_eq!(row["id"], user.id, "a row in another user's list: {row}");
            let serial = row["serial"].as_i64().unwrap();
            assert!(
                serials.insert(serial),
                "serial {serial} twice for user {}",
                user.id
            );
            let token = row["push_token"].as_str().unwrap().to_owned();
            let previous = holders.insert(token.clone(), (user.id, serial));
            assert!(
                previous.is_none(),
                "push token {token} in two rows: {previous:?} and ({}, {serial})",
                user.id
            );
        }
    }
    holders
}

async fn users(app: &TestApp, count: usize) -> Vec<TestUser> {
    let mut users = Vec::new();
    for n in 0..count {
        users.push(app.user(&format!("user_{n:03}")).await);
    }
    users
}

#[every_backend]
async fn concurrent_mixed_writes_keep_one_row_per_token_and_unique_serials(app: TestApp) {
    let app = Arc::new(app);
    let users = Arc::new(users(&app, 4).await);
    let mut tasks = Vec::new();
    for i in 0..240u32 {
        let (app, users) = (app.clone(), users.clone());
        tasks.push(tokio::spawn(async move {
            let user = &users[i as usize % users.len()];
            let base = FAMILIES[(i / 7) as usize % 2];
            let token = push_token(i % 5);
            let body = serde_json::json!({ "push_token": token, "language": "en" });
            let reply = match i % 4 {
                0 | 1 => {
                    app.put(&format!("{base}/{}", i % 3), &user.token, body)
                        .await
                }
                2 => app.post(base, &user.token, body).await,
                _ => app.delete(&format!("{base}/{}", i % 3), &user.token).await,
            };
            assert!(
                [StatusCode::OK, StatusCode::CREATED, StatusCode::NOT_FOUND]
                    .contains(&reply.status),
                "request {i}: {} {}",
                reply.status,
                reply.body
            );
        }));
    }
    for task in tasks {
        task.await.expect("no request panicked");
    }
    for base in FAMILIES {
        assert_invariants(&app, &users, base).await;
    }
}

#[every_backend]
async fn concurrent_posts_by_one_user_get_distinct_serials(app: TestApp) {
    let app = Arc::new(app);
    let user = Arc::new(app.user("alice_1").await);
    let mut tasks = Vec::new();
    for n in 0..60u32 {
        let (app, user) = (app.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            let reply = app.post(RING, &user.token, registration(n)).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            reply.body["serial"].as_i64().unwrap()
        }));
    }
    let mut serials = Vec::new();
    for task in tasks {
        serials.push(task.await.unwrap());
    }
    serials.sort_unstable();
    assert_eq!(serials, (1..=60).collect::<Vec<i64>>());
    assert_eq!(rows(&app, RING, &user.token).await.len(), 60);
}

#[every_backend]
async fn concurrent_takeovers_of_one_token_leave_it_with_exactly_one_user(app: TestApp) {
    let app = Arc::new(app);
    let users = Arc::new(users(&app, 12).await);
    let mut tasks = Vec::new();
    for (i, _) in users.iter().enumerate() {
        for base in FAMILIES {
            let (app, users) = (app.clone(), users.clone());
            tasks.push(tokio::spawn(async move {
                let user = &users[i];
                let reply = if i % 2 == 0 {
                    app.put(&format!("{base}/{i}"), &user.token, registration(7))
                        .await
                } else {
                    app.post(base, &user.token, registration(7)).await
                };
                assert!(reply.status.is_success(), "{} {}", reply.status, reply.body);
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    for base in FAMILIES {
        let holders = assert_invariants(&app, &users, base).await;
        assert_eq!(
            holders.len(),
            1,
            "{base}: exactly one row holds the token: {holders:?}"
        );
    }
}

#[every_backend]
async fn concurrent_puts_at_one_serial_leave_one_row(app: TestApp) {
    let app = Arc::new(app);
    let user = Arc::new(app.user("alice_1").await);
    let mut tasks = Vec::new();
    for n in 0..40u32 {
        let (app, user) = (app.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            let reply = app
                .put(&format!("{MESSAGE}/5"), &user.token, registration(n))
                .await;
            assert!(reply.status.is_success(), "{} {}", reply.status, reply.body);
            reply.status
        }));
    }
    let mut created = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::CREATED {
            created += 1;
        }
    }
    assert_eq!(created, 1, "the row is created once, then updated");
    let rows = app.get(MESSAGE, &user.token).await.body;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["serial"], 5);
}

/// Writes that arrive together are made together (PostgreSQL runs them as
/// one batch): a POST refused for want of a serial leaves the others as
/// they would be alone.
#[every_backend]
async fn posts_refused_for_want_of_a_serial_leave_the_writes_beside_them_unharmed(app: TestApp) {
    let app = Arc::new(app);
    let (alice, bob) = (app.user("alice_1").await, app.user("bob_222").await);
    app.put(
        &format!("{MESSAGE}/{}", i64::MAX),
        &alice.token,
        registration(0),
    )
    .await
    .assert_success(StatusCode::CREATED);
    let mut tasks = Vec::new();
    for i in 1..=40u32 {
        let (app, token) = (app.clone(), [&alice, &bob][i as usize % 2].token.clone());
        tasks.push(tokio::spawn(async move {
            (i, app.post(MESSAGE, &token, registration(i)).await)
        }));
    }
    for task in tasks {
        let (i, reply) = task.await.unwrap();
        if i % 2 == 0 {
            reply.assert_error(StatusCode::CONFLICT, "serial exist");
        } else {
            reply.assert_success(StatusCode::CREATED);
        }
    }
    let serials: HashSet<i64> = rows(&app, MESSAGE, &bob.token)
        .await
        .iter()
        .map(|row| row["serial"].as_i64().unwrap())
        .collect();
    assert_eq!(serials, (1..=20).collect());
    assert_eq!(rows(&app, MESSAGE, &alice.token).await.len(), 1);
}

#[every_backend]
async fn session_from_one_instance_is_accepted_by_another(app: TestApp) {
    let other = app.another_instance().await;
    let user = app.user("alice_1").await;
    let reply = other.post(RING, &user.token, registration(1)).await;
    reply.assert_success(StatusCode::CREATED);
    let rows = app.get(RING, &user.token).await.body;
    assert_eq!(rows[0]["push_token"], push_token(1));
}

/// The instance that answered the logout at once, the others once their
/// cache lifetime has passed (on PostgreSQL, usually sooner: see
/// `cache.rs`).
#[every_backend]
async fn logout_through_one_instance_is_honoured_by_all_within_the_cache_lifetime(app: TestApp) {
    let other = app.another_instance().await;
    let user = app.user("alice_1").await;
    app.post(MESSAGE, &user.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let body = serde_json::json!({ "username": user.username, "token": user.token });
    other
        .request(Method::POST, "/v1/api/user/logout", &[], Some(body))
        .await
        .assert_success(StatusCode::OK);
    other
        .get(MESSAGE, &user.token)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    tokio::time::sleep(CACHE_LIFETIME).await;
    for instance in [&app, &other] {
        instance
            .get(MESSAGE, &user.token)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    }
}

#[every_backend]
async fn takeover_through_another_instance_is_seen_by_the_first(app: TestApp) {
    let other = app.another_instance().await;
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_222").await;
    app.put(&format!("{RING}/1"), &alice.token, registration(3))
        .await
        .assert_success(StatusCode::CREATED);
    other
        .put(&format!("{RING}/9"), &bob.token, registration(3))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(app.get(RING, &alice.token).await.body, Value::Array(vec![]));
    assert_eq!(app.get(RING, &bob.token).await.body[0]["serial"], 9);
}
