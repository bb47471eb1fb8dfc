//! What every push-token route asks of a request, and in which order it
//! checks: a session, a method the route serves, then the serial, then a
//! body that is a JSON object.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{push_token, registration, FAMILIES};
use crate::support::push_tokens::{assert_vendor_error, at, held, put_new_row};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn push_token_routes_require_a_session(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        put_new_row(&app, base, 1, &user.token, 1).await;
        let routes = [
            (Method::GET, base.to_owned(), None),
            (Method::POST, base.to_owned(), Some(registration(2))),
            (Method::DELETE, base.to_owned(), None),
            (Method::PUT, at(base, 1), Some(registration(3))),
            (Method::DELETE, at(base, 1), None),
        ];
        for (method, uri, body) in routes {
            let reply = app.request(method.clone(), &uri, &[], body.clone()).await;
            reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
            let reply = app
                .request(method.clone(), &uri, &[("token", "not-a-session")], body)
                .await;
            reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
        }
        assert_eq!(
            held(&app, base, &user.token).await,
            vec![(1, push_token(1))]
        );
    }
}

#[every_backend]
async fn push_token_routes_answer_405_for_wrong_methods(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for (method, uri) in [
            (Method::PUT, base.to_owned()),
            (Method::PATCH, base.to_owned()),
            (Method::GET, at(base, 1)),
            (Method::POST, at(base, 1)),
        ] {
            let reply = app
                .request(
                    method,
                    &uri,
                    &[("token", &user.token)],
                    Some(registration(1)),
                )
                .await;
            reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

#[every_backend]
async fn requests_are_checked_token_then_serial_then_body(app: TestApp) {
    let user = app.user("alice_1").await;
    let huge =
        json!({"push_token": push_token(1), "language": "en", "phone_model": "x".repeat(20_000)});
    for base in FAMILIES {
        // No token beats a bad serial and a bad body.
        let reply = app
            .request(Method::PUT, &at(base, "abc"), &[], Some(json!("not json")))
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
        let reply = app
            .request(
                Method::DELETE,
                &at(base, "-1"),
                &[("token", "not-a-session")],
                None,
            )
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
        // A bad serial beats a bad or oversized body.
        let reply = app
            .put(&at(base, "abc"), &user.token, json!("not json"))
            .await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        let reply = app.put(&at(base, "abc"), &user.token, huge.clone()).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        let reply = app.put(&at(base, "-1"), &user.token, json!({})).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        // Then the body.
        let reply = app.put(&at(base, 1), &user.token, huge.clone()).await;
        reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        let reply = app.post(base, &user.token, huge.clone()).await;
        reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}

#[every_backend]
async fn body_that_is_not_a_json_object_is_paramer_error(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        for raw in [
            "",
            "not json",
            "[]",
            "[1,2]",
            "\"text\"",
            "42",
            "null",
            "{\"push_token\":",
        ] {
            let reply = app
                .put(&at(base, 1), &user.token, Value::String(raw.to_owned()))
                .await;
            assert_vendor_error(
                &format!("PUT {base}/1 {raw:?}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "paramer error",
            );
            let reply = app
                .post(base, &user.token, Value::String(raw.to_owned()))
                .await;
            assert_vendor_error(
                &format!("POST {base} {raw:?}"),
                reply.status,
                &reply.body,
                StatusCode::BAD_REQUEST,
                "paramer error",
            );
        }
        assert_eq!(held(&app, base, &user.token).await, vec![]);
    }
}
