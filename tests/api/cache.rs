//! Sessions and row lists kept in memory: a request that starts after a
//! change was answered sees it, on the instance that answered it at once,
//! and on another instance on the same PostgreSQL database within the
//! cache's lifetime (sooner, when its notification arrives).
//!
//! Every scenario first reads what it is about to change twice, so that the
//! answer is kept and the second read was served from memory.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::accounts::{assert_token_invalid, login_ok, logout, refresh, text};
use crate::support::api::{push_token, registration, CACHE_LIFETIME, MESSAGE, PASSWORD, RING};
use crate::support::push_tokens::{at, held};
use crate::support::{every_backend, TestApp, TestUser};

const LOOKUPS: &str = "pushtoken_cache_lookups_total";

/// Reads `user`'s ring rows until one read is served from memory; the
/// rows.
async fn kept(app: &TestApp, user: &TestUser) -> Vec<(i64, String)> {
    let hits = [r#"cache="rows""#, r#"outcome="hit""#];
    let before = app.metric(LOOKUPS, &hits).await;
    let first = held(app, RING, &user.token).await;
    let second = held(app, RING, &user.token).await;
    assert_eq!(first, second);
    // The metrics are process-wide: other tests may add hits too, but
    // never take one away.
    assert!(
        app.metric(LOOKUPS, &hits).await > before,
        "the second read was not served from memory"
    );
    second
}

#[every_backend]
async fn a_read_of_kept_rows_is_served_from_memory_and_counted(app: TestApp) {
    let alice = app.user("alice_1").await;
    app.put(&at(RING, 0), &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(kept(&app, &alice).await, vec![(0, push_token(1))]);
}

#[every_backend]
async fn every_token_write_is_seen_by_the_next_read(app: TestApp) {
    let alice = app.user("alice_1").await;
    kept(&app, &alice).await;
    app.put(&at(RING, 3), &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(kept(&app, &alice).await, vec![(3, push_token(1))]);
    app.post(RING, &alice.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        kept(&app, &alice).await,
        vec![(3, push_token(1)), (4, push_token(2))]
    );
    app.put(&at(RING, 3), &alice.token, registration(5))
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(
        kept(&app, &alice).await,
        vec![(3, push_token(5)), (4, push_token(2))]
    );
    app.delete(&at(RING, 4), &alice.token)
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(kept(&app, &alice).await, vec![(3, push_token(5))]);
    app.delete(RING, &alice.token)
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(kept(&app, &alice).await, vec![]);
}

#[every_backend]
async fn a_token_taken_over_leaves_the_kept_rows_of_its_former_holder(app: TestApp) {
    let (alice, bob) = (app.user("alice_1").await, app.user("bob_001").await);
    for serial in 0..3 {
        let body = registration(10 + serial);
        app.put(&at(RING, serial), &alice.token, body)
            .await
            .assert_success(StatusCode::CREATED);
    }
    assert_eq!(kept(&app, &alice).await.len(), 3);
    // Bob's PUT and then his POST take two of Alice's tokens: nothing of
    // Bob's own is kept, only Alice's list is.
    app.put(&at(RING, 7), &bob.token, registration(11))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        kept(&app, &alice).await,
        vec![(0, push_token(10)), (2, push_token(12))]
    );
    app.post(RING, &bob.token, registration(12))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(kept(&app, &alice).await, vec![(0, push_token(10))]);
    // The other family's list of Alice's is its own.
    app.put(&at(MESSAGE, 0), &bob.token, registration(10))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(kept(&app, &alice).await, vec![(0, push_token(10))]);
}

#[every_backend]
async fn a_kept_session_ends_with_its_logout_refresh_or_password_change(app: TestApp) {
    let alice = app.user("alice_1").await;
    kept(&app, &alice).await;
    let rotated = refresh(&app, &alice.reflash_key).await;
    rotated.assert_success(StatusCode::CREATED);
    assert_token_invalid(&app, &alice.token).await;

    let token = text(&rotated.body, "token");
    let other = login_ok(&app, "alice_1", PASSWORD).await;
    let other = text(&other, "token");
    app.get(RING, &other).await.assert_success_list();
    app.get(RING, &other).await.assert_success_list();
    let body = json!({ "password": "new_pass_22", "oldpassword": PASSWORD });
    app.request(
        Method::PUT,
        "/v1/api/user/password",
        &[("token", &token)],
        Some(body),
    )
    .await
    .assert_success(StatusCode::OK);
    assert_token_invalid(&app, &other).await;

    app.put(&at(RING, 0), &token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    app.get(RING, &token).await.assert_success_list();
    app.get(RING, &token).await.assert_success_list();
    logout(&app, "alice_1", &token)
        .await
        .assert_success(StatusCode::OK);
    assert_token_invalid(&app, &token).await;
    // Logging out deletes the user's tokens: a new session sees none.
    let again = login_ok(&app, "alice_1", "new_pass_22").await;
    assert_eq!(held(&app, RING, &text(&again, "token")).await, vec![]);
}

#[every_backend]
async fn without_a_cache_every_read_asks_the_database_and_the_rules_hold(app: TestApp) {
    let app = app.with_flags(&["--cache-entries", "0"]).await;
    let alice = app.user("alice_1").await;
    app.put(&at(RING, 0), &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        held(&app, RING, &alice.token).await,
        vec![(0, push_token(1))]
    );
    app.delete(&at(RING, 0), &alice.token)
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(held(&app, RING, &alice.token).await, vec![]);
    logout(&app, "alice_1", &alice.token)
        .await
        .assert_success(StatusCode::OK);
    assert_token_invalid(&app, &alice.token).await;
}

/// The bound: a change through one instance is seen by another once the
/// cache's lifetime (50 ms unless set) has passed since it was answered,
/// whether or not its notification came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_instances_a_change_is_seen_once_the_cache_lifetime_has_passed() {
    let first = TestApp::postgres().await;
    let second = first.another_instance().await;
    let alice = first.user("alice_1").await;
    kept(&second, &alice).await;
    first
        .put(&at(RING, 0), &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    tokio::time::sleep(CACHE_LIFETIME).await;
    assert_eq!(
        held(&second, RING, &alice.token).await,
        vec![(0, push_token(1))]
    );
    logout(&first, "alice_1", &alice.token)
        .await
        .assert_success(StatusCode::OK);
    tokio::time::sleep(CACHE_LIFETIME).await;
    assert_token_invalid(&second, &alice.token).await;
}

/// With a lifetime of a minute, only the notification can bring a change to
/// the other instance: it does, for a write, a takeover and a logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_instances_a_change_is_told_to_the_other_instance_through_postgres() {
    let first = TestApp::postgres().await;
    let second = first
        .another_instance_with(&["--cache-lifetime", "60s"])
        .await;
    let (alice, bob) = (first.user("alice_1").await, first.user("bob_001").await);
    kept(&second, &alice).await;
    first
        .put(&at(RING, 0), &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    seen_within(&second, &alice, Some(vec![(0, push_token(1))])).await;
    first
        .put(&at(RING, 0), &bob.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    seen_within(&second, &alice, Some(vec![])).await;
    logout(&first, "alice_1", &alice.token)
        .await
        .assert_success(StatusCode::OK);
    seen_within(&second, &alice, None).await;
}

/// Reads `user`'s ring rows on `app` until they are `expected` (`None`: the
/// session is refused), within far less than the minute the entries live.
async fn seen_within(app: &TestApp, user: &TestUser, expected: Option<Vec<(i64, String)>>) {
    let start = Instant::now();
    loop {
        let reply = app.get(RING, &user.token).await;
        let now = match reply.status {
            StatusCode::OK => Some(
                reply
                    .body
                    .as_array()
                    .expect("rows")
                    .iter()
                    .map(|row| (row["serial"].as_i64().unwrap(), text(row, "push_token")))
                    .collect(),
            ),
            _ => {
                reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
                None
            }
        };
        if now == expected {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {now:?}, not {expected:?}, 10 s after the change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
