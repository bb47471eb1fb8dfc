//! Liveness and readiness.

use axum::http::{Method, StatusCode};

use crate::common::TestApp;
use crate::on_every_backend;

async fn healthz_answers_200_without_authentication(app: TestApp) {
    let reply = app.request(Method::GET, "/healthz", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ok");
}

async fn readyz_answers_200_when_the_database_answers(app: TestApp) {
    let reply = app.request(Method::GET, "/readyz", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["database"], app.state.store.backend());
}

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

on_every_backend!(
    healthz_answers_200_without_authentication,
    readyz_answers_200_when_the_database_answers,
    readyz_answers_503_once_the_database_is_closed,
);
