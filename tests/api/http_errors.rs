//! Errors common to every route: unknown routes, wrong methods, oversized
//! and malformed bodies, and the order in which a request is checked.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{registration, FAMILIES, MESSAGE, RING};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn unknown_route_is_json_404_not_found(app: TestApp) {
    for path in [
        "/",
        "/v1/api/nothing",
        "/v1/api/user/token/1/extra",
        "/v2/api/user/login",
    ] {
        let reply = app.request(Method::GET, path, &[], None).await;
        reply.assert_error(StatusCode::NOT_FOUND, "not found");
    }
}

#[every_backend]
async fn wrong_method_is_json_405_method_not_allowed(app: TestApp) {
    let user = app.user("alice_1").await;
    let cases = [
        (Method::GET, "/v1/api/user/login".to_owned()),
        (Method::DELETE, "/v1/api/user/logout".to_owned()),
        (Method::PUT, RING.to_owned()),
        (Method::GET, format!("{RING}/1")),
        (Method::POST, format!("{MESSAGE}/1")),
        (Method::PATCH, MESSAGE.to_owned()),
    ];
    for (method, path) in cases {
        let reply = app
            .request(method.clone(), &path, &[("token", &user.token)], None)
            .await;
        reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
}

#[every_backend]
async fn body_over_16_kib_is_json_413_body_too_large(app: TestApp) {
    let user = app.user("alice_1").await;
    let mut big = registration(1);
    big["phone_model"] = Value::String("x".repeat(17 * 1024));
    for base in FAMILIES {
        let reply = app.post(base, &user.token, big.clone()).await;
        reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        assert_eq!(app.get(base, &user.token).await.body, json!([]));
    }
    let reply = app
        .post_anonymous(
            "/v1/api/user/login",
            json!({ "username": "x".repeat(20_000) }),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
}

#[every_backend]
async fn body_that_is_not_a_json_object_is_paramer_error(app: TestApp) {
    let user = app.user("alice_1").await;
    let bodies: [&[u8]; 9] = [
        b"",
        b"not json",
        b"[]",
        b"[1,2]",
        b"\"text\"",
        b"42",
        b"null",
        b"{\"push_token\":",
        b"\xff\xfe{}",
    ];
    for base in FAMILIES {
        for body in bodies {
            let reply = app
                .send_raw(Method::POST, base, &[("token", &user.token)], body.to_vec())
                .await;
            reply.assert_error(StatusCode::BAD_REQUEST, "paramer error");
        }
    }
    for path in ["/v1/api/user", "/v1/api/user/login", "/v1/api/user/refresh"] {
        for body in bodies {
            let reply = app.send_raw(Method::POST, path, &[], body.to_vec()).await;
            reply.assert_error(StatusCode::BAD_REQUEST, "paramer error");
        }
    }
}

#[every_backend]
async fn deeply_nested_json_is_paramer_error_not_a_crash(app: TestApp) {
    let user = app.user("alice_1").await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let reply = app
        .send_raw(
            Method::POST,
            RING,
            &[("token", &user.token)],
            deep.into_bytes(),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "paramer error");
}

#[every_backend]
async fn body_without_content_type_is_read_as_json(app: TestApp) {
    let user = app.user("alice_1").await;
    let body = serde_json::to_vec(&registration(1)).unwrap();
    let reply = app
        .send_raw(Method::POST, RING, &[("token", &user.token)], body.clone())
        .await;
    reply.assert_success(StatusCode::CREATED);
    let headers = [
        ("token", user.token.as_str()),
        ("content-type", "text/plain"),
    ];
    let reply = app
        .send_raw(Method::PUT, &format!("{MESSAGE}/3"), &headers, body)
        .await;
    reply.assert_success(StatusCode::CREATED);
}

#[every_backend]
async fn authentication_is_checked_before_serial_and_body(app: TestApp) {
    let big = "x".repeat(17 * 1024).into_bytes();
    for base in FAMILIES {
        let path = format!("{base}/not-a-serial");
        let reply = app.send_raw(Method::PUT, &path, &[], big.clone()).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
        let reply = app
            .send_raw(Method::PUT, &path, &[("token", "forged")], b"[]".to_vec())
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
        let reply = app
            .send_raw(Method::POST, base, &[], b"not json".to_vec())
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
    }
}

#[every_backend]
async fn serial_is_checked_before_body(app: TestApp) {
    let user = app.user("alice_1").await;
    let big = "x".repeat(17 * 1024).into_bytes();
    for base in FAMILIES {
        let path = format!("{base}/-1");
        let reply = app
            .send_raw(Method::PUT, &path, &[("token", &user.token)], big.clone())
            .await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        let reply = app
            .send_raw(
                Method::PUT,
                &path,
                &[("token", &user.token)],
                b"[]".to_vec(),
            )
            .await;
        reply.assert_error(StatusCode::BAD_REQUEST, "serial format error");
        let reply = app
            .send_raw(
                Method::PUT,
                &format!("{base}/1"),
                &[("token", &user.token)],
                big.clone(),
            )
            .await;
        reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
}

#[every_backend]
async fn every_response_carries_a_request_id(app: TestApp) {
    let reply = app.request(Method::GET, "/nowhere", &[], None).await;
    assert!(!reply.headers["x-request-id"].is_empty());
    let reply = app
        .request(
            Method::GET,
            "/nowhere",
            &[("x-request-id", "abc-123")],
            None,
        )
        .await;
    assert_eq!(reply.headers["x-request-id"], "abc-123");
}

/// Whether `id` has the form of a request id the server keeps or makes.
fn usable_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The `x-request-id` values of the answer to `GET /nowhere` sent with
/// these `x-request-id` values (raw bytes: any a client can send).
async fn request_ids_answered(app: &TestApp, sent: &[&[u8]]) -> Vec<String> {
    use axum::http::{HeaderValue, Request};
    use tower::ServiceExt;
    let mut request = Request::get("/nowhere");
    for value in sent {
        request = request.header("x-request-id", HeaderValue::from_bytes(value).unwrap());
    }
    let response = app
        .router()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    response
        .headers()
        .get_all("x-request-id")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[every_backend]
async fn a_request_id_of_1_to_64_safe_characters_is_kept(app: TestApp) {
    let longest = "aZ09._-".repeat(10)[..64].to_owned();
    for id in ["a", "abc-123", "0f3e.req_7", longest.as_str()] {
        assert_eq!(request_ids_answered(&app, &[id.as_bytes()]).await, [id]);
    }
}

#[every_backend]
async fn an_unusable_request_id_is_replaced_by_one_the_server_makes(app: TestApp) {
    let too_long = "a".repeat(65);
    let huge = "x".repeat(60 * 1024);
    let sent: [&[u8]; 9] = [
        b"",
        b" ",
        b"has space",
        b"semi;colon",
        b"quote\"d",
        b"<script>",
        "caf\u{e9}".as_bytes(),
        too_long.as_bytes(),
        huge.as_bytes(),
    ];
    let mut made = Vec::new();
    for id in sent {
        let answered = request_ids_answered(&app, &[id]).await;
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert!(usable_request_id(&answered[0]), "{:?}", answered[0]);
        assert_ne!(answered[0].as_bytes(), id);
        made.push(answered[0].clone());
    }
    made.sort();
    made.dedup();
    assert_eq!(made.len(), sent.len(), "each made id is new: {made:?}");
}

#[every_backend]
async fn of_several_request_ids_the_first_decides_and_one_is_answered(app: TestApp) {
    let answered = request_ids_answered(&app, &[b"first-1", b"second-2"]).await;
    assert_eq!(answered, ["first-1"]);
    let answered = request_ids_answered(&app, &[b"bad id", b"second-2"]).await;
    assert_eq!(answered.len(), 1);
    assert!(usable_request_id(&answered[0]), "{answered:?}");
    assert_ne!(answered[0], "second-2");
}
