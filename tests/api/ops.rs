//! Liveness, readiness and the metrics endpoint.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::api::{registration, RING};
use crate::support::app::stalled_body;
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn healthz_answers_200_without_authentication(app: TestApp) {
    let reply = app.request(Method::GET, "/healthz", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ok");
}

#[every_backend]
async fn readyz_answers_200_when_the_database_answers(app: TestApp) {
    let reply = app.request(Method::GET, "/readyz", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["database"], app.state.store.backend());
}

#[every_backend]
async fn readyz_answers_503_once_the_database_is_closed(app: TestApp) {
    app.state.store.close().await;
    let reply = app.request(Method::GET, "/readyz", &[], None).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "10001");
    let reply = app.request(Method::GET, "/healthz", &[], None).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "liveness does not touch the database"
    );
}

#[every_backend]
async fn metrics_count_requests_by_route_template_in_prometheus_format(app: TestApp) {
    let user = app.user("alice_1").await;
    app.put(&format!("{RING}/41"), &user.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let (status, headers, body) = app
        .send_bytes(Method::GET, "/metrics", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body).unwrap();
    let put = r#"pushtoken_http_requests_total{route="/v1/api/user/token/{serial}",method="PUT",status="201"}"#;
    assert!(text.contains(put), "{text}");
    assert!(
        !text.contains("/v1/api/user/token/41"),
        "the serial is not a label value"
    );
    let bucket = r#"pushtoken_http_request_duration_seconds_bucket{route="/v1/api/user/token/{serial}",method="PUT",le="0.005"}"#;
    assert!(text.contains(bucket), "{text}");
    // The row counts come from the background refresh, which a server in
    // process does not run: refreshed here by hand.
    pushtoken::http::refresh_row_counts(&app.state.store).await;
    let (_, _, body) = app
        .send_bytes(Method::GET, "/metrics", &[], Vec::new())
        .await;
    let text = String::from_utf8(body).unwrap();
    for gauge in [
        "pushtoken_push_tokens{family=\"ring\"}",
        "pushtoken_push_tokens{family=\"message\"}",
        "pushtoken_active_sessions",
        "pushtoken_db_pool_connections{state=\"in_use\"}",
        "pushtoken_db_pool_max_connections",
        "pushtoken_database_up",
    ] {
        assert!(text.contains(gauge), "{gauge} in {text}");
    }
}

#[tokio::test]
async fn metrics_label_a_made_up_method_as_other() {
    let app = TestApp::sqlite().await;
    let made_up = Method::from_bytes(b"BREW").unwrap();
    let (status, _, _) = app
        .send_bytes(made_up, "/v1/api/user/token", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (_, _, body) = app
        .send_bytes(Method::GET, "/metrics", &[], Vec::new())
        .await;
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("BREW"), "{text}");
    let other =
        r#"pushtoken_http_requests_total{route="/v1/api/user/token",method="other",status="405"}"#;
    assert!(text.contains(other), "{text}");
}

#[tokio::test]
async fn sqlite_commits_concurrent_writes_together_and_shows_it_in_metrics() {
    let app = TestApp::sqlite().await;
    let user = app.user("alice_1").await;
    let before = app
        .state
        .store
        .write_batches()
        .expect("SQLite counts batches");
    let uris: Vec<String> = (1..=64).map(|n| format!("{RING}/{n}")).collect();
    let puts = (1..=64).map(|n| app.put(&uris[n - 1], &user.token, registration(n as u32)));
    for reply in futures_util::future::join_all(puts).await {
        reply.assert_success(StatusCode::CREATED);
    }
    let after = app.state.store.write_batches().unwrap();
    let (batches, writes) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(writes, 64);
    assert!(batches < writes, "{batches} commits for {writes} writes");
    let (_, _, body) = app
        .send_bytes(Method::GET, "/metrics", &[], Vec::new())
        .await;
    let text = String::from_utf8(body).unwrap();
    for counter in [
        "pushtoken_db_write_batches_total ",
        "pushtoken_db_batched_writes_total ",
    ] {
        assert!(text.contains(counter), "{counter} in {text}");
    }
}

#[every_backend]
async fn with_metrics_listen_metrics_are_served_apart_and_not_by_the_api(app: TestApp) {
    let app = app
        .with_flags(&["--metrics-listen", "127.0.0.1:9464"])
        .await;
    let (status, _, body) = app
        .send_bytes(Method::GET, "/metrics", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, br#"{"message":"not found"}"#);
    let metrics = pushtoken::metrics_app(app.state.clone());
    let get = |path: &str| {
        metrics
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
    };
    let response = get("/metrics").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("pushtoken_db_pool_max_connections"), "{text}");
    for path in ["/healthz", "/v1/api/user/token", "/docs/"] {
        assert_eq!(
            get(path).await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // The document still describes /metrics, wherever it is served.
    let reply = app.request(Method::GET, "/openapi.json", &[], None).await;
    assert!(reply.body["paths"]["/metrics"].is_object());
}

#[every_backend]
async fn metrics_count_towards_the_in_flight_cap_and_health_probes_do_not(app: TestApp) {
    let app = app
        .with_flags(&[
            "--max-in-flight",
            "1",
            "--request-timeout",
            "1s",
            "--metrics-listen",
            "127.0.0.1:9464",
        ])
        .await;
    let user = app.user("alice_1").await;
    let holder = Request::post(RING)
        .header("token", &user.token)
        .body(stalled_body())
        .unwrap();
    let holding = tokio::spawn(app.router().oneshot(holder));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!holding.is_finished(), "the stalled request holds the slot");
    let scrape = pushtoken::metrics_app(app.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(scrape.status(), StatusCode::SERVICE_UNAVAILABLE);
    for probe in ["/healthz", "/readyz"] {
        let reply = app.request(Method::GET, probe, &[], None).await;
        assert_eq!(reply.status, StatusCode::OK, "{probe} passes the cap");
    }
    assert_eq!(
        holding.await.unwrap().unwrap().status(),
        StatusCode::REQUEST_TIMEOUT
    );
    let scrape = pushtoken::metrics_app(app.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
}

#[every_backend]
async fn metrics_on_the_api_count_towards_the_in_flight_cap(app: TestApp) {
    let app = app
        .with_flags(&["--max-in-flight", "1", "--request-timeout", "1s"])
        .await;
    let user = app.user("alice_1").await;
    let holder = Request::post(RING)
        .header("token", &user.token)
        .body(stalled_body())
        .unwrap();
    let holding = tokio::spawn(app.router().oneshot(holder));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, _, _) = app
        .send_bytes(Method::GET, "/metrics", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        holding.await.unwrap().unwrap().status(),
        StatusCode::REQUEST_TIMEOUT
    );
}
