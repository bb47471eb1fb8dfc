//! Serials: the one `POST` picks, and the ones a path may name (a
//! non-negative 64-bit integer, leading zeros allowed).

use axum::http::StatusCode;

use crate::support::api::{push_token, registration, FAMILIES, MESSAGE, RING};
use crate::support::push_tokens::{assert_vendor_error, at, held, put_new_row};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn post_serial_is_one_more_than_the_callers_highest(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        let reply = app.post(base, &alice.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        let reply = app.post(base, &alice.token, registration(2)).await;
        assert_eq!(reply.body["serial"], 2);
        put_new_row(&app, base, 10, &alice.token, 10).await;
        let reply = app.post(base, &alice.token, registration(11)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 11);
        // The highest is what counts, not the count of rows nor a gap.
        app.delete(&at(base, 11), &alice.token)
            .await
            .assert_success(StatusCode::OK);
        let reply = app.post(base, &alice.token, registration(12)).await;
        assert_eq!(reply.body["serial"], 11);
        // Another user's serials do not count.
        let reply = app.post(base, &bob.token, registration(20)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(reply.body["id"], bob.id);
    }
}

#[every_backend]
async fn post_serial_counts_only_that_family(app: TestApp) {
    let user = app.user("alice_1").await;
    put_new_row(&app, RING, 40, &user.token, 1).await;
    let reply = app.post(MESSAGE, &user.token, registration(2)).await;
    reply.assert_success(StatusCode::CREATED);
    assert_eq!(reply.body["serial"], 1);
    let reply = app.post(RING, &user.token, registration(3)).await;
    assert_eq!(reply.body["serial"], 41);
}

#[every_backend]
async fn post_after_serial_zero_only_is_serial_one(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        put_new_row(&app, base, 0, &user.token, 1).await;
        let reply = app.post(base, &user.token, registration(2)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
    }
}

#[every_backend]
async fn post_with_no_serial_left_is_serial_exist_and_changes_nothing(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        put_new_row(&app, base, i64::MAX, &alice.token, 1).await;
        put_new_row(&app, base, 2, &alice.token, 2).await;
        put_new_row(&app, base, 1, &bob.token, 3).await;
        // A new token, and another user's token: no serial for either,
        // and bob keeps his.
        for n in [4, 3] {
            app.post(base, &alice.token, registration(n))
                .await
                .assert_error(StatusCode::CONFLICT, "serial exist");
        }
        assert_eq!(
            held(&app, base, &alice.token).await,
            vec![(2, push_token(2)), (i64::MAX, push_token(1))]
        );
        assert_eq!(held(&app, base, &bob.token).await, vec![(1, push_token(3))]);
        // A token alice holds is updated where it is.
        for (n, serial) in [(1, i64::MAX), (2, 2)] {
            let reply = app.post(base, &alice.token, registration(n)).await;
            reply.assert_success(StatusCode::OK);
            assert_eq!(reply.body["serial"], serial);
        }
    }
}

#[every_backend]
async fn put_accepts_serial_zero_and_leading_zeros(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.put(&at(base, "0"), &user.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 0);
        let reply = app
            .put(&at(base, "007"), &user.token, registration(7))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 7);
        // `07` is the same row as `007`.
        let reply = app.put(&at(base, "07"), &user.token, registration(7)).await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["serial"], 7);
        let reply = app
            .put(&at(base, "000"), &user.token, registration(1))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_eq!(reply.body["serial"], 0);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(0, push_token(1)), (7, push_token(7))]
        );
        app.delete(&at(base, "0007"), &user.token)
            .await
            .assert_success(StatusCode::OK);
        app.delete(&at(base, "00"), &user.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

#[every_backend]
async fn serial_that_is_not_a_non_negative_int64_is_serial_format_error(app: TestApp) {
    let user = app.user("alice_1").await;
    let bad_serials = [
        "-1",
        "-0",
        "abc",
        "1.5",
        "1.0",
        "9223372036854775808",
        "99999999999999999999",
        "+1",
        "1e3",
        "0x10",
        "1a",
        "%201",
        "1%20",
        "%EF%BC%91", // a full-width digit one
    ];
    for base in FAMILIES {
        put_new_row(&app, base, 1, &user.token, 1).await;
        for serial in bad_serials {
            let reply = app
                .put(&at(base, serial), &user.token, registration(2))
                .await;
            assert_vendor_error(
                &format!("PUT {base}/{serial}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "serial format error",
            );
            let reply = app.delete(&at(base, serial), &user.token).await;
            assert_vendor_error(
                &format!("DELETE {base}/{serial}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "serial format error",
            );
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn put_accepts_the_largest_int64_serial(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app
            .put(&at(base, i64::MAX), &user.token, registration(1))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], i64::MAX);
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(i64::MAX, push_token(1))]
        );
        let reply = app
            .put(
                &at(base, "09223372036854775807"),
                &user.token,
                registration(2),
            )
            .await;
        reply.assert_success(StatusCode::OK);
        app.delete(&at(base, i64::MAX), &user.token)
            .await
            .assert_success(StatusCode::OK);
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}
