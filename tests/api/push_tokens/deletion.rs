//! Deleting one row by serial, or all of a family's rows.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::api::{push_token, registration, FAMILIES, MESSAGE, RING};
use crate::support::push_tokens::{assert_vendor_error, at, held, put_new_row};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn delete_one_answers_success_and_the_row_is_gone(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for serial in [1u32, 2, 3] {
            put_new_row(&app, base, serial, &user.token, serial).await;
        }
        let reply = app.delete(&at(base, 2), &user.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"message": "success"}));
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1)), (3, push_token(3))]
        );
        // Deleting it again: it is gone.
        app.delete(&at(base, 2), &user.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        // The freed token can be registered again at a new serial.
        let reply = app.post(base, &user.token, registration(2)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 4);
    }
}

#[every_backend]
async fn delete_of_a_missing_serial_is_no_data_error(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        app.delete(&at(base, 1), &user.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        put_new_row(&app, base, 1, &user.token, 1).await;
        for serial in ["0", "2", "10", "9223372036854775807"] {
            let reply = app.delete(&at(base, serial), &user.token).await;
            assert_vendor_error(
                &format!("DELETE {base}/{serial}"),
                reply.status,
                &reply.body,
                StatusCode::NOT_FOUND,
                "no data error",
            );
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn delete_of_another_users_serial_is_no_data_error_and_their_row_survives(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        put_new_row(&app, base, 6, &bob.token, 6).await;
        app.delete(&at(base, 6), &alice.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        assert_eq!(held(&app, base, &bob.token).await, vec![(6, push_token(6))]);
        // Even when alice has a row at the same serial, only hers goes.
        put_new_row(&app, base, 6, &alice.token, 7).await;
        app.delete(&at(base, 6), &alice.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(held(&app, base, &bob.token).await, vec![(6, push_token(6))]);
        assert_eq!(held(&app, base, &alice.token).await, vec![]);
    }
}

#[every_backend]
async fn delete_all_answers_the_count_of_deleted_rows(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.delete(base, &user.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
        for serial in [3u32, 1, 2] {
            put_new_row(&app, base, serial, &user.token, serial).await;
        }
        let reply = app.delete(base, &user.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"message": "success", "deleted": 3}));
        assert_eq!(held(&app, base, &user.token).await, vec![]);
        let reply = app.delete(base, &user.token).await;
        assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
        // Serials start again from one.
        let reply = app.post(base, &user.token, registration(1)).await;
        assert_eq!(reply.body["serial"], 1);
    }
}

#[every_backend]
async fn delete_all_clears_only_that_family_and_only_the_callers_rows(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for (user, offset) in [(&alice, 0u32), (&bob, 100)] {
        for base in FAMILIES {
            for serial in [1u32, 2] {
                app.put(
                    &at(base, serial),
                    &user.token,
                    registration(offset + serial),
                )
                .await
                .assert_success(StatusCode::CREATED);
            }
        }
    }
    let reply = app.delete(RING, &alice.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 2}));
    assert_eq!(held(&app, RING, &alice.token).await, vec![]);
    assert_eq!(
        held(&app, MESSAGE, &alice.token).await,
        vec![(1, push_token(1)), (2, push_token(2))]
    );
    for base in FAMILIES {
        assert_eq!(
            held(&app, base, &bob.token).await,
            vec![(1, push_token(101)), (2, push_token(102))]
        );
    }
    let reply = app.delete(MESSAGE, &alice.token).await;
    assert_eq!(reply.body, json!({"message": "success", "deleted": 2}));
    for base in FAMILIES {
        assert_eq!(held(&app, base, &bob.token).await.len(), 2, "{base}");
    }
}
