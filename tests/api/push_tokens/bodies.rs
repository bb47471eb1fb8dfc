//! A push-token body as a whole: fields of the wrong JSON type, null,
//! integral numbers, which error is reported first, unknown fields, and a
//! refused body changing nothing.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::api::{push_token, registration, with, FAMILIES, MESSAGE, RING};
use crate::support::push_tokens::{
    at, expect_accepted, expect_rejected, put_new_row, row_keys, row_of, rows, DEFAULT_BUNDLE_ID,
};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn wrong_json_types_are_format_errors(app: TestApp) {
    let user = app.user("alice_1").await;
    let cases = [
        ("push_token", json!(1234)),
        ("push_token", json!(["a"])),
        ("language", json!(42)),
        ("language", json!({"en": true})),
        ("dev", json!("0")),
        ("bundleid", json!(5)),
        ("os", json!(true)),
        ("os_token", json!({})),
        ("push_platform", json!(1)),
        ("phone_model", json!([])),
        ("id", json!("1")),
    ];
    for (field, value) in cases {
        expect_rejected(
            &app,
            &user.token,
            &with(registration(1), field, value),
            StatusCode::BAD_REQUEST,
            &format!("{field} format error"),
        )
        .await;
    }
}

#[every_backend]
async fn null_counts_as_absent(app: TestApp) {
    let user = app.user("alice_1").await;
    for (body, message) in [
        (
            json!({"push_token": null, "language": "en"}),
            "undefined push_token",
        ),
        (
            json!({"push_token": push_token(1), "language": null}),
            "undefined language",
        ),
    ] {
        expect_rejected(&app, &user.token, &body, StatusCode::BAD_REQUEST, message).await;
    }
    let nulls = json!({
        "push_token": push_token(1), "language": "en", "dev": null, "bundleid": null,
        "os": null, "os_token": null, "push_platform": null, "phone_model": null, "id": null,
    });
    // On create: the defaults, never null.
    for row in expect_accepted(&app, &user.token, &nulls).await {
        assert_eq!(row["dev"], 0);
        assert_eq!(row["bundleid"], DEFAULT_BUNDLE_ID);
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(row[field], "", "{field}");
        }
    }
    // On update: the stored values stay.
    let full = json!({
        "push_token": push_token(1), "language": "en", "dev": 1, "bundleid": "com.example.x",
        "os": "Huawei", "os_token": "ot", "push_platform": "HUAWEI", "phone_model": "p40",
    });
    expect_accepted(&app, &user.token, &full).await;
    for row in expect_accepted(&app, &user.token, &nulls).await {
        for (key, value) in full.as_object().unwrap() {
            assert_eq!(&row[key], value, "{key}");
        }
    }
}

#[every_backend]
async fn integral_json_numbers_count_as_integers(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let body = json!({ "push_token": push_token(1), "language": "en", "dev": 1.0, "id": -3872874502856994.0 });
        let reply = app.put(&format!("{base}/1"), &user.token, body).await;
        reply.assert_error(StatusCode::FORBIDDEN, "id error");
        let body = json!({ "push_token": push_token(1), "language": "en", "dev": 1.0, "id": user.id as f64 });
        let reply = app.put(&format!("{base}/1"), &user.token, body).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["dev"], 1);
    }
}

#[every_backend]
async fn first_failing_field_in_the_listed_order_is_reported(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    // In the order of the API: a bad value, a value of a wrong type, and
    // what each one is reported as.
    let fields = [
        (
            "push_token",
            json!("short"),
            "push_token length error",
            json!(1),
        ),
        ("language", json!("e"), "language length error", json!(1)),
        ("dev", json!(2), "dev error", json!("0")),
        ("bundleid", json!(""), "bundleid length error", json!(1)),
        ("os", json!("a\nb"), "os error", json!(1)),
        ("os_token", json!("a b"), "os_token error", json!(1)),
        (
            "push_platform",
            json!("a.b"),
            "push_platform error",
            json!(1),
        ),
        (
            "phone_model",
            json!("a\u{1}b"),
            "phone_model error",
            json!(1),
        ),
        ("id", json!(bob.id), "id error", json!("1")),
    ];
    let status = |msg: &str| {
        if msg == "id error" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        }
    };
    for i in 0..fields.len() {
        let (name, bad, msg, wrong_type) = &fields[i];
        // Every field from i on is invalid: field i is reported.
        let mut body = registration(1);
        for (later, later_bad, _, _) in &fields[i..] {
            body[*later] = later_bad.clone();
        }
        expect_rejected(&app, &alice.token, &body, status(msg), msg).await;
        // Field i invalid, later ones of the wrong type: still field i.
        let mut body = with(registration(1), name, bad.clone());
        for (later, _, _, later_wrong) in &fields[i + 1..] {
            body[*later] = later_wrong.clone();
        }
        expect_rejected(&app, &alice.token, &body, status(msg), msg).await;
        // Field i of the wrong type, later ones invalid: field i's format error.
        let mut body = with(registration(1), name, wrong_type.clone());
        for (later, later_bad, _, _) in &fields[i + 1..] {
            body[*later] = later_bad.clone();
        }
        expect_rejected(
            &app,
            &alice.token,
            &body,
            StatusCode::BAD_REQUEST,
            &format!("{name} format error"),
        )
        .await;
    }
    // A missing push_token is reported before a bad language.
    expect_rejected(
        &app,
        &alice.token,
        &json!({"language": "e", "dev": 5}),
        StatusCode::BAD_REQUEST,
        "undefined push_token",
    )
    .await;
    // A bad push_token is reported before a missing language.
    expect_rejected(
        &app,
        &alice.token,
        &json!({"push_token": "a b"}),
        StatusCode::BAD_REQUEST,
        "push_token length error",
    )
    .await;
    // Keys in the body in another order change nothing.
    let reversed = json!("{\"id\":999999,\"dev\":9,\"language\":\"e\",\"push_token\":\"x\"}");
    expect_rejected(
        &app,
        &alice.token,
        &reversed,
        StatusCode::BAD_REQUEST,
        "push_token length error",
    )
    .await;
}

#[every_backend]
async fn unknown_fields_are_ignored(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let body = json!({
            "push_token": push_token(1), "language": "en", "os_push_version": 1,
            "serial": 99, "user_id": 12345, "created_at": 1, "message": "hello",
            "extra": {"nested": [1, 2, null]}, "PUSH_TOKEN": "ignored",
        });
        let reply = app.post(base, &user.token, body.clone()).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1, "a body serial is not a field");
        assert_eq!(reply.body["push_token"], push_token(1));
        assert_ne!(reply.body["created_at"], 1);
        // The same token at another serial: a move, so a create there.
        let reply = app.put(&at(base, 5), &user.token, body).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 5);
        let listed = rows(&app, base, &user.token).await;
        assert_eq!(listed, vec![row_of(&reply.body)]);
        let keys: Vec<&str> = listed[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), row_keys().len(), "{keys:?}");
    }
}

#[every_backend]
async fn a_rejected_request_changes_nothing(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    for base in FAMILIES {
        app.put(
            &at(base, 1),
            &alice.token,
            json!({"push_token": push_token(1), "language": "en", "os": "Huawei"}),
        )
        .await
        .assert_success(StatusCode::CREATED);
        put_new_row(&app, base, 2, &alice.token, 2).await;
        put_new_row(&app, base, 3, &bob.token, 3).await;
    }
    let before_alice: Vec<_> = [
        rows(&app, RING, &alice.token).await,
        rows(&app, MESSAGE, &alice.token).await,
    ]
    .into();
    let before_bob: Vec<_> = [
        rows(&app, RING, &bob.token).await,
        rows(&app, MESSAGE, &bob.token).await,
    ]
    .into();
    for base in FAMILIES {
        let attempts = [
            // An update of serial 1 with one bad field after good changes.
            (
                Method::PUT,
                at(base, 1),
                json!({"push_token": push_token(1), "language": "fr", "os": "Xiaomi", "phone_model": "a\nb"}),
            ),
            // A move of serial 1's token to serial 9, with a bad language.
            (
                Method::PUT,
                at(base, 9),
                json!({"push_token": push_token(1), "language": "x"}),
            ),
            // A move of serial 2's token onto serial 1, with a bad dev.
            (
                Method::PUT,
                at(base, 1),
                json!({"push_token": push_token(2), "language": "en", "dev": 7}),
            ),
            // A takeover of bob's token, with a foreign id.
            (
                Method::PUT,
                at(base, 4),
                json!({"push_token": push_token(3), "language": "en", "id": bob.id}),
            ),
            (
                Method::POST,
                base.to_owned(),
                json!({"push_token": push_token(3), "language": "en", "os_token": "a b"}),
            ),
            // A POST update of a held token, with a bad bundleid.
            (
                Method::POST,
                base.to_owned(),
                json!({"push_token": push_token(1), "language": "de", "bundleid": "a b"}),
            ),
        ];
        for (method, uri, body) in attempts {
            let reply = app
                .request(
                    method.clone(),
                    &uri,
                    &[("token", &alice.token)],
                    Some(body.clone()),
                )
                .await;
            assert!(
                reply.status.is_client_error(),
                "{method} {uri} {body}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    let after_alice: Vec<_> = [
        rows(&app, RING, &alice.token).await,
        rows(&app, MESSAGE, &alice.token).await,
    ]
    .into();
    let after_bob: Vec<_> = [
        rows(&app, RING, &bob.token).await,
        rows(&app, MESSAGE, &bob.token).await,
    ]
    .into();
    assert_eq!(after_alice, before_alice);
    assert_eq!(after_bob, before_bob);
}
