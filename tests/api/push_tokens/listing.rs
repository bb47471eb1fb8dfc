//! Listing a family: an array ordered by serial, rows with exactly the
//! vendor's keys, the two families apart, and the rows after a restart.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::api::{push_token, registration, FAMILIES, MESSAGE, RING};
use crate::support::push_tokens::{
    at, held, put_new_row, row_keys, rows, DEFAULT_BUNDLE_ID, VENDOR_PHONE_MODEL,
};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn get_lists_an_empty_array_for_a_new_user(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.get(base, &user.token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body, json!([]));
    }
}

#[every_backend]
async fn get_lists_rows_ordered_by_serial(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for serial in [7u32, 2, 5] {
            put_new_row(&app, base, serial, &user.token, serial).await;
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(2, push_token(2)), (5, push_token(5)), (7, push_token(7))]
        );
    }
}

#[every_backend]
async fn get_rows_have_exactly_the_vendor_keys(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let before = pushtoken::unix_now();
        put_new_row(&app, base, 3, &user.token, 3).await;
        let after = pushtoken::unix_now();
        let listed = rows(&app, base, &user.token).await;
        assert_eq!(listed.len(), 1);
        let row = listed[0].as_object().expect("row is an object");
        let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = row_keys();
        want.sort_unstable();
        assert_eq!(keys, want, "{base}");
        assert_eq!(row["id"], user.id);
        assert_eq!(row["serial"], 3);
        assert_eq!(row["push_token"], push_token(3));
        assert_eq!(row["language"], "en");
        assert_eq!(row["dev"], 0);
        assert_eq!(row["bundleid"], DEFAULT_BUNDLE_ID);
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(row[field], "", "{base} {field} must be \"\", never null");
        }
        for field in ["created_at", "updated_at"] {
            let t = row[field].as_i64().unwrap_or_else(|| panic!("{field}"));
            assert!((before..=after).contains(&t), "{field} {t} is unix seconds");
        }
    }
}

#[every_backend]
async fn families_hold_separate_data(app: TestApp) {
    let user = app.user("alice_1").await;
    put_new_row(&app, RING, 1, &user.token, 1).await;
    assert_eq!(held(&app, MESSAGE, &user.token).await, vec![]);
    // The same serial in the other family is a row of its own (a create).
    put_new_row(&app, MESSAGE, 1, &user.token, 2).await;
    app.post(MESSAGE, &user.token, registration(3))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        held(&app, RING, &user.token).await,
        vec![(1, push_token(1))]
    );
    assert_eq!(
        held(&app, MESSAGE, &user.token).await,
        vec![(1, push_token(2)), (2, push_token(3))]
    );
    // Deleting in one family leaves the other.
    app.delete(&at(RING, 1), &user.token)
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(held(&app, MESSAGE, &user.token).await.len(), 2);
    let reply = app.delete(MESSAGE, &user.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 2}));
    put_new_row(&app, RING, 4, &user.token, 4).await;
    let reply = app.delete(MESSAGE, &user.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
    assert_eq!(
        held(&app, RING, &user.token).await,
        vec![(4, push_token(4))]
    );
}

#[every_backend]
async fn rows_survive_a_restart_and_the_session_still_works(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.post(
            base,
            &user.token,
            json!({
                "push_token": push_token(1), "language": "zh", "dev": 1, "os": "Android",
                "os_token": "fcm:abc", "push_platform": "FCM", "phone_model": VENDOR_PHONE_MODEL,
            }),
        )
        .await
        .assert_success(StatusCode::CREATED);
        put_new_row(&app, base, 7, &user.token, 7).await;
    }
    let before = [
        rows(&app, RING, &user.token).await,
        rows(&app, MESSAGE, &user.token).await,
    ];
    let app = app.restart().await;
    let after = [
        rows(&app, RING, &user.token).await,
        rows(&app, MESSAGE, &user.token).await,
    ];
    assert_eq!(after, before);
    assert_eq!(after[0].len(), 2);
    for base in FAMILIES {
        let reply = app.post(base, &user.token, registration(8)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 8);
        let reply = app.put(&at(base, 1), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["phone_model"], VENDOR_PHONE_MODEL);
    }
}
