//! The OpenAPI document: the committed `openapi.yaml` is exactly what the
//! code generates, it is served, the API explorer works offline, and the
//! server answers every status the document lists and no other.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::api::{login_body, push_token, registration, sign_up_body, with, PASSWORD};
use crate::support::app::stalled_body;
use crate::support::openapi::{assert_documented, SPEC};
use crate::support::{every_backend, TestApp};

#[test]
fn committed_openapi_yaml_is_what_the_code_generates() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let generated = pushtoken::http::openapi().to_yaml().unwrap();
    assert!(
        committed == generated,
        "openapi.yaml differs from the code: regenerate it with `cargo run -- openapi > openapi.yaml`"
    );
}

#[test]
fn document_is_openapi_3_1_with_both_security_schemes() {
    assert!(SPEC["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemes = &SPEC["components"]["securitySchemes"];
    assert_eq!(
        schemes["token"],
        json!({ "type": "apiKey", "in": "header", "name": "token", "description": schemes["token"]["description"] })
    );
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
}

#[test]
fn document_lists_every_route_of_the_api() {
    let mut routes = BTreeSet::new();
    for (path, operations) in SPEC["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut expected: BTreeSet<String> = [
        "POST /v1/api/user",
        "POST /v1/api/user/login",
        "POST /v1/api/user/logout",
        "POST /v1/api/user/refresh",
        "PUT /v1/api/user/password",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.yaml",
        "GET /openapi.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for route in [
        "POST /v1/api/notify",
        "GET /v1/api/user/deviceses/event_record",
        "GET /v1/api/user/event_record/{uid}/devicees",
    ] {
        expected.insert(route.to_owned());
    }
    for base in ["/v1/api/user/token", "/v1/api/user/message/token"] {
        for method in ["GET", "POST", "DELETE"] {
            expected.insert(format!("{method} {base}"));
        }
        for method in ["PUT", "DELETE"] {
            expected.insert(format!("{method} {base}/{{serial}}"));
        }
    }
    assert_eq!(routes, expected);
}

/// The notify key of the servers that answer `POST /v1/api/notify`.
const NOTIFY_KEY: &str = "openapi-notify-key";
const NOTIFY_BEARER: &str = "Bearer openapi-notify-key";

/// Makes the server answer `status` for one documented operation.
async fn trigger(app: &TestApp, method: &str, template: &str, status: u16) -> (StatusCode, Value) {
    let user = app
        .user(&format!(
            "u{}",
            uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap()
        ))
        .await;
    let token = user.token.as_str();
    let auth = [("token", token)];
    let path = template.replace("{serial}", "1").replace("{uid}", "DEV-1");
    let big = "x".repeat(20_000).into_bytes();
    let send = |method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>| {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (path, headers) = (
            path.to_owned(),
            headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
        );
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let (status, _, bytes) = app.send_bytes(method.clone(), &path, &headers, body).await;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_documented(&method, &path, status, &body);
            (status, body)
        }
    };
    let json = |v: Value| serde_json::to_vec(&v).unwrap();
    if template == "/v1/api/notify" {
        let key = [("authorization", NOTIFY_BEARER)];
        let event = json!({ "user": user.id, "family": "ring",
                            "event": { "type": "1", "uid": "DEV-1" } });
        return match status {
            202 | 403 => send(method, &path, &key, json(event)).await,
            400 => send(method, &path, &key, b"[]".to_vec()).await,
            401 => send(method, &path, &[], json(event)).await,
            404 => {
                send(
                    method,
                    &path,
                    &key,
                    json(with(event, "user", json!(999_999))),
                )
                .await
            }
            408 => {
                let request = axum::http::Request::post(&path)
                    .header("authorization", NOTIFY_BEARER)
                    .body(stalled_body())
                    .unwrap();
                let response = tower::ServiceExt::oneshot(app.router(), request)
                    .await
                    .unwrap();
                (response.status(), Value::Null)
            }
            413 => send(method, &path, &key, big).await,
            503 => {
                app.state.store.close().await;
                send(method, &path, &key, json(event)).await
            }
            other => panic!("no way to make {template} answer {other}: add one here"),
        };
    }
    if template.contains("event_record") {
        return match status {
            200 => send(method, &path, &auth, Vec::new()).await,
            400 => send(method, &format!("{path}?page=x"), &auth, Vec::new()).await,
            401 => send(method, &path, &[("token", "forged")], Vec::new()).await,
            503 => {
                app.state.store.close().await;
                send(method, &path, &auth, Vec::new()).await
            }
            other => panic!("no way to make {template} answer {other}: add one here"),
        };
    }
    let is_tokens = template.contains("/token");
    let valid = match template {
        "/v1/api/user" => sign_up_body("new_user"),
        "/v1/api/user/login" => login_body(&user.username, PASSWORD),
        "/v1/api/user/refresh" => json!({ "reflash_key": user.reflash_key }),
        "/v1/api/user/password" => json!({ "password": "new_pass_22", "oldpassword": PASSWORD }),
        _ => registration(1),
    };
    let is_password = template == "/v1/api/user/password";
    match (method, status) {
        (_, 503) => {
            app.state.store.close().await;
            send(method, &path, &auth, json(valid)).await
        }
        (_, 413) => send(method, &path, &auth, big).await,
        (_, 408) => {
            // The server runs with a 1 s request timeout; the body never comes.
            let request = axum::http::Request::builder()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(&path)
                .header("token", token)
                .body(stalled_body())
                .unwrap();
            let response = tower::ServiceExt::oneshot(app.router(), request)
                .await
                .unwrap();
            let status = response.status();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_documented(
                &Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &path,
                status,
                &body,
            );
            (status, body)
        }
        ("put", 429) if is_password => {
            let wrong = json!({ "password": "new_pass_22", "oldpassword": "wrong_pass1" });
            for _ in 0..10 {
                send(method, &path, &auth, json(wrong.clone())).await;
            }
            send(method, &path, &auth, json(valid)).await
        }
        ("put", 200) if is_password => send(method, &path, &auth, json(valid)).await,
        (_, 429) => {
            // The server runs with two sign-up/login/refresh requests a
            // minute per address; `app.user` spent both.
            send(method, &path, &[], json(valid)).await
        }
        (_, 401) if is_tokens || is_password || template.ends_with("/logout") => {
            send(method, &path, &[("token", "forged")], json(json!({}))).await
        }
        ("post", 401) if template.ends_with("/login") => {
            send(
                method,
                &path,
                &[],
                json(login_body(&user.username, "wrong_pass1")),
            )
            .await
        }
        ("post", 401) => send(method, &path, &[], json(json!({ "reflash_key": "forged" }))).await,
        (_, 400) => {
            let path = template.replace("{serial}", "x");
            send(method, &path, &auth, b"[]".to_vec()).await
        }
        ("post", 201) if template == "/v1/api/user" => {
            send(method, &path, &[], json(sign_up_body("new_user"))).await
        }
        ("post", 403) if template == "/v1/api/user" => {
            send(
                method,
                &path,
                &[],
                json(with(sign_up_body("new_user"), "apikey", json!("wrong"))),
            )
            .await
        }
        ("post", 409) if template == "/v1/api/user" => {
            send(method, &path, &[], json(sign_up_body(&user.username))).await
        }
        ("post", 201) if template.ends_with("/login") => {
            send(
                method,
                &path,
                &[],
                json(login_body(&user.username, PASSWORD)),
            )
            .await
        }
        ("post", 201) if template.ends_with("/refresh") => {
            send(
                method,
                &path,
                &[],
                json(json!({ "reflash_key": user.reflash_key })),
            )
            .await
        }
        ("post", 200) if template.ends_with("/logout") => {
            send(method, &path, &auth, Vec::new()).await
        }
        ("get", 200) | ("delete", 200) if !template.contains('{') => {
            send(method, &path, &auth, Vec::new()).await
        }
        ("post", 201) | ("put", 201) => send(method, &path, &auth, json(registration(1))).await,
        ("post", 200) | ("put", 200) => {
            send(method, &path, &auth, json(registration(1))).await;
            send(method, &path, &auth, json(registration(1))).await
        }
        (_, 403) => {
            send(
                method,
                &path,
                &auth,
                json(
                    json!({ "push_token": push_token(1), "language": "en", "id": user.id + 1000 }),
                ),
            )
            .await
        }
        ("post", 409) => {
            let top = template.replace("{serial}", "9223372036854775807");
            send(
                "put",
                &format!("{top}/9223372036854775807"),
                &auth,
                json(registration(2)),
            )
            .await;
            send(method, &path, &auth, json(registration(1))).await
        }
        ("delete", 200) => {
            send("put", &path, &auth, json(registration(1))).await;
            send(method, &path, &auth, Vec::new()).await
        }
        ("delete", 404) => send(method, &path, &auth, Vec::new()).await,
        ("get", 200) => send(method, &path, &[], Vec::new()).await,
        other => panic!("no way to make {template} answer {other:?}: add one here"),
    }
}

#[every_backend]
async fn every_status_the_document_lists_is_answered(app: TestApp) {
    let mut cases = Vec::new();
    for (template, operations) in SPEC["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for status in operation["responses"].as_object().unwrap().keys() {
                cases.push((
                    template.clone(),
                    method.clone(),
                    status.parse::<u16>().unwrap(),
                ));
            }
        }
    }
    assert!(cases.len() > 60, "{} documented answers", cases.len());
    let db = app.db.clone();
    drop(app);
    for (template, method, status) in cases {
        // A fresh server each time: some cases close the database.
        let mut flags = match status {
            429 => vec!["--auth-rate-per-minute", "2"],
            408 => vec!["--request-timeout", "1s"],
            _ => vec![],
        };
        if template == "/v1/api/notify" && status != 403 {
            flags.extend(["--notify-key", NOTIFY_KEY]);
        }
        let app = TestApp::start_at(db.clone(), &db.url(), &flags).await;
        let (got, body) = trigger(&app, &method, &template, status).await;
        assert_eq!(got.as_u16(), status, "{method} {template}: {body}");
        app.state.store.close().await;
    }
}

#[every_backend]
async fn openapi_yaml_and_json_are_served_and_match_the_document(app: TestApp) {
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let (status, headers, yaml) = app
        .send_bytes(Method::GET, "/openapi.yaml", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/yaml");
    assert_eq!(yaml, committed);
    let (status, headers, body) = app
        .send_bytes(Method::GET, "/openapi.json", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), *SPEC);
}

#[every_backend]
async fn docs_serve_an_api_explorer_with_no_outside_assets(app: TestApp) {
    let (status, headers, _) = app.send_bytes(Method::GET, "/docs", &[], Vec::new()).await;
    assert!(
        status.is_redirection(),
        "/docs leads to the explorer: {status}"
    );
    assert_eq!(headers["location"], "/docs/");
    let (status, _, page) = app.send_bytes(Method::GET, "/docs/", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "loads nothing from outside: {page}"
    );
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let (status, _, bytes) = app.send_bytes(Method::GET, asset, &[], Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(!bytes.is_empty(), "{asset}");
    }
    let (_, _, init) = app
        .send_bytes(Method::GET, "/docs/swagger-initializer.js", &[], Vec::new())
        .await;
    assert!(String::from_utf8(init).unwrap().contains("/openapi.json"));
}
