//! Token hygiene: a row whose token has not been registered again (a `PUT`
//! or `POST` of it, even one that changes nothing) for
//! `PUSHTOKEN_TOKEN_MAX_AGE` is removed by a background sweep, in batches;
//! rows registered since, and other users' rows, stay.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::api::{push_token, registration, FAMILIES, MESSAGE, RING};
use crate::support::push_tokens::{at, held, put_new_row, rows};
use crate::support::server::{command, Server};
use crate::support::{every_backend, every_database, TestApp};

/// The default `PUSHTOKEN_TOKEN_MAX_AGE`, in seconds.
const MAX_AGE: i64 = 270 * 86_400;

const REMOVED: &str = "pushtoken_stale_tokens_removed_total";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Makes every row of user `user_id` look last registered `age` seconds
/// ago, straight in the database.
async fn age_rows(app: &TestApp, user_id: i64, age: i64) -> u64 {
    app.execute(&format!(
        "UPDATE push_tokens SET updated_at = {} WHERE user_id = {user_id}",
        now() - age
    ))
    .await
}

#[every_backend]
async fn the_sweep_removes_rows_not_registered_again_within_the_max_age(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bobby_1").await;
    put_new_row(&app, RING, 1, &alice.token, 1).await;
    put_new_row(&app, RING, 2, &alice.token, 2).await;
    put_new_row(&app, MESSAGE, 1, &alice.token, 3).await;
    put_new_row(&app, RING, 1, &bob.token, 4).await;
    put_new_row(&app, MESSAGE, 1, &bob.token, 5).await;
    assert_eq!(age_rows(&app, alice.id, MAX_AGE + 60).await, 3);
    // Old, but not old enough.
    assert_eq!(age_rows(&app, bob.id, MAX_AGE - 3600).await, 2);
    let ring = [r#"family="ring""#];
    let message = [r#"family="message""#];
    let before = (
        app.metric(REMOVED, &ring).await,
        app.metric(REMOVED, &message).await,
    );

    assert_eq!(pushtoken::sweep_stale_tokens(&app.state, now()).await, 3);
    for base in FAMILIES {
        assert!(rows(&app, base, &alice.token).await.is_empty(), "{base}");
    }
    assert_eq!(held(&app, RING, &bob.token).await, vec![(1, push_token(4))]);
    assert_eq!(
        held(&app, MESSAGE, &bob.token).await,
        vec![(1, push_token(5))]
    );
    // Process-wide counters: other tests may add to them, never take away.
    assert!(app.metric(REMOVED, &ring).await >= before.0 + 2.0);
    assert!(app.metric(REMOVED, &message).await >= before.1 + 1.0);
    // Nothing left to remove; an hour later, bob's rows are due.
    assert_eq!(pushtoken::sweep_stale_tokens(&app.state, now()).await, 0);
    assert_eq!(
        pushtoken::sweep_stale_tokens(&app.state, now() + 3600).await,
        2
    );
    assert!(held(&app, RING, &bob.token).await.is_empty());
}

#[every_backend]
async fn a_put_or_post_that_changes_nothing_makes_the_row_young_again(app: TestApp) {
    let alice = app.user("alice_1").await;
    for (n, base) in (0..).step_by(10).zip(FAMILIES) {
        for serial in 1..=3 {
            put_new_row(&app, base, serial, &alice.token, n + serial).await;
        }
    }
    let aged_at = now() - MAX_AGE - 60;
    assert_eq!(age_rows(&app, alice.id, MAX_AGE + 60).await, 6);
    for (n, base) in (0..).step_by(10).zip(FAMILIES) {
        // The same bodies again: nothing changes but the time.
        let put = app
            .put(&at(base, 1), &alice.token, registration(n + 1))
            .await;
        put.assert_success(StatusCode::OK);
        let post = app.post(base, &alice.token, registration(n + 2)).await;
        post.assert_success(StatusCode::OK);
        assert_eq!(post.body["serial"], 2);
        for reply in [&put, &post] {
            let updated_at = reply.body["updated_at"].as_i64().unwrap();
            assert!(updated_at > aged_at + MAX_AGE, "{}", reply.body);
        }
    }

    assert_eq!(pushtoken::sweep_stale_tokens(&app.state, now()).await, 2);
    for (n, base) in (0..).step_by(10).zip(FAMILIES) {
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(1, push_token(n + 1)), (2, push_token(n + 2))],
            "{base}"
        );
    }
    // Registered now: due once the max age has passed from now.
    assert_eq!(
        pushtoken::sweep_stale_tokens(&app.state, now() + MAX_AGE - 60).await,
        0
    );
    assert_eq!(
        pushtoken::sweep_stale_tokens(&app.state, now() + MAX_AGE + 60).await,
        4
    );
}

#[every_backend]
async fn a_sweep_removes_more_stale_rows_than_one_batch_holds(app: TestApp) {
    let alice = app.user("alice_1").await;
    put_new_row(&app, RING, 1, &alice.token, 1).await;
    let stale = 2 * pushtoken::STALE_TOKEN_BATCH as u32 + 7;
    let aged_at = now() - MAX_AGE - 60;
    let values: Vec<String> = (0..stale)
        .map(|i| {
            let family = if i % 2 == 0 { "ring" } else { "message" };
            format!(
                "({}, '{family}', {}, '{}', 'en', 0, 'com.lancens.wxdoorbell', '', '', '', '', \
                 {aged_at}, {aged_at})",
                alice.id,
                100 + i,
                push_token(1000 + i)
            )
        })
        .collect();
    let inserted = app
        .execute(&format!(
            "INSERT INTO push_tokens (user_id, family, serial, push_token, language, dev, \
             bundleid, os, os_token, push_platform, phone_model, created_at, updated_at) \
             VALUES {}",
            values.join(", ")
        ))
        .await;
    assert_eq!(inserted, u64::from(stale));

    assert_eq!(
        pushtoken::sweep_stale_tokens(&app.state, now()).await,
        u64::from(stale)
    );
    assert_eq!(
        held(&app, RING, &alice.token).await,
        vec![(1, push_token(1))]
    );
    assert!(held(&app, MESSAGE, &alice.token).await.is_empty());
}

#[every_database]
async fn a_running_server_sweeps_stale_tokens_by_itself_and_logs_how_many(database_url: &str) {
    let mut cmd = command(database_url);
    // A sweep every second.
    cmd.env("PUSHTOKEN_TOKEN_MAX_AGE", "4s")
        .env("PUSHTOKEN_LOG_FORMAT", "json");
    let (server, log) = Server::spawn_logged(cmd).await;
    let token = server.session("alice_1").await;
    let (status, body) = server
        .call("PUT", &at(RING, 1), Some(&token), Some(registration(1)))
        .await;
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    loop {
        let (status, body) = server.call("GET", RING, Some(&token), None).await;
        assert_eq!(status, 200, "{body}");
        if body == json!([]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the row is still there after 30s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not before its max age.
    assert!(started.elapsed() >= Duration::from_secs(2), "{started:?}");
    server.stop().await;
    let lines = log.lines().await;
    let swept: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|text| text.starts_with("removed push tokens not registered again"))
        })
        .collect();
    assert_eq!(swept.len(), 1, "{lines:#?}");
    assert_eq!(swept[0]["level"], "INFO", "{}", swept[0]);
    let swept = &swept[0];
    assert_eq!(
        (
            &swept["tokens"],
            &swept["ring_tokens"],
            &swept["message_tokens"]
        ),
        (&json!(1), &json!(1), &json!(0)),
        "{swept}"
    );
    assert!(
        !lines.iter().any(|line| line.contains(&push_token(1))),
        "a push token in the log: {lines:#?}"
    );
}
