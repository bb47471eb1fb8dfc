//! Who holds a push token: one row per token within a family, moved
//! between serials and taken over from another user, and nothing one user
//! does reaching another's rows.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::api::{push_token, registration, FAMILIES, MESSAGE, RING};
use crate::support::push_tokens::{at, held, put_new_row, row_of, rows};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn put_of_a_token_held_at_another_serial_moves_it(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        put_new_row(&app, base, 3, &user.token, 1).await;
        let reply = app.put(&at(base, 5), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 5);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(5, push_token(1))]
        );
        app.delete(&at(base, 3), &user.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
        // Onto a serial holding another token: that row is updated, the old
        // serial goes.
        put_new_row(&app, base, 8, &user.token, 2).await;
        let reply = app.put(&at(base, 8), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(8, push_token(1))]
        );
    }
}

#[every_backend]
async fn put_of_a_token_another_user_holds_takes_it_over(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        put_new_row(&app, base, 3, &alice.token, 1).await;
        put_new_row(&app, base, 4, &alice.token, 2).await;
        let reply = app.put(&at(base, 3), &bob.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["id"], bob.id);
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(4, push_token(2))]
        );
        assert_eq!(held(&app, base, &bob.token).await, vec![(3, push_token(1))]);
        app.delete(&at(base, 3), &alice.token)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no data error");
    }
}

#[every_backend]
async fn post_of_a_token_another_user_holds_takes_it_over(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        put_new_row(&app, base, 6, &alice.token, 1).await;
        put_new_row(&app, base, 2, &bob.token, 2).await;
        let reply = app.post(base, &bob.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 3, "a new row for bob");
        assert_eq!(reply.body["id"], bob.id);
        assert_eq!(held(&app, base, &alice.token).await, vec![]);
        assert_eq!(
            held(&app, base, &bob.token).await,
            vec![(2, push_token(2)), (3, push_token(1))]
        );
        // And back again.
        let reply = app.post(base, &alice.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(held(&app, base, &bob.token).await, vec![(2, push_token(2))]);
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn one_token_one_row_holds_per_family(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    put_new_row(&app, MESSAGE, 1, &alice.token, 1).await;
    // Bob registers the same phone token as a ring token: alice's message
    // row stays.
    put_new_row(&app, RING, 1, &bob.token, 1).await;
    app.post(RING, &bob.token, registration(1))
        .await
        .assert_success(StatusCode::OK);
    assert_eq!(
        held(&app, MESSAGE, &alice.token).await,
        vec![(1, push_token(1))]
    );
    assert_eq!(held(&app, RING, &bob.token).await, vec![(1, push_token(1))]);
    // One user may hold the same token in both families.
    app.post(MESSAGE, &bob.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
    app.post(RING, &bob.token, registration(2))
        .await
        .assert_success(StatusCode::CREATED);
    assert_eq!(
        held(&app, MESSAGE, &bob.token).await,
        vec![(1, push_token(2))]
    );
    assert_eq!(
        held(&app, RING, &bob.token).await,
        vec![(1, push_token(1)), (2, push_token(2))]
    );
    // A move in one family leaves the other family's row alone.
    put_new_row(&app, RING, 9, &bob.token, 2).await;
    assert_eq!(
        held(&app, MESSAGE, &bob.token).await,
        vec![(1, push_token(2))]
    );
    assert_eq!(
        held(&app, RING, &bob.token).await,
        vec![(1, push_token(1)), (9, push_token(2))]
    );
}

#[every_backend]
async fn another_users_get_never_shows_my_rows(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        for serial in [1u32, 2] {
            put_new_row(&app, base, serial, &alice.token, serial).await;
        }
        let reply = app.get(base, &bob.token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!([]));
        put_new_row(&app, base, 1, &bob.token, 11).await;
        let bobs = rows(&app, base, &bob.token).await;
        assert_eq!(bobs.len(), 1);
        assert_eq!(bobs[0]["id"], bob.id);
        assert_eq!(bobs[0]["push_token"], push_token(11));
        for row in rows(&app, base, &alice.token).await {
            assert_eq!(row["id"], alice.id);
        }
    }
}

#[every_backend]
async fn another_users_put_at_the_same_serial_creates_their_own_row(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        let body = json!({"push_token": push_token(1), "language": "en", "os": "Huawei", "dev": 1});
        let mine = app.put(&at(base, 1), &alice.token, body).await;
        mine.assert_success(StatusCode::CREATED);
        let body = json!({"push_token": push_token(2), "language": "fr"});
        let reply = app.put(&at(base, 1), &bob.token, body).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["id"], bob.id);
        assert_eq!(reply.body["os"], "", "nothing of alice's row");
        assert_eq!(reply.body["dev"], 0, "nothing of alice's row");
        assert_eq!(
            rows(&app, base, &alice.token).await,
            vec![row_of(&mine.body)]
        );
        // Bob's POST numbers from his own rows.
        let reply = app.post(base, &bob.token, registration(3)).await;
        assert_eq!(reply.body["serial"], 2);
        // Bob deleting serial 1 deletes his, not alice's.
        app.delete(&at(base, 1), &bob.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(
            rows(&app, base, &alice.token).await,
            vec![row_of(&mine.body)]
        );
    }
}

#[every_backend]
async fn another_users_delete_all_leaves_my_rows(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        put_new_row(&app, base, 1, &alice.token, 1).await;
        put_new_row(&app, base, 1, &bob.token, 2).await;
        let reply = app.delete(base, &bob.token).await;
        assert_eq!(reply.body, json!({"message": "success", "deleted": 1}));
        let reply = app.delete(base, &bob.token).await;
        assert_eq!(reply.body, json!({"message": "success", "deleted": 0}));
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(1, push_token(1))]
        );
    }
}
