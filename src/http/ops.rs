//! Operations routes: liveness, readiness, and the API description.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::http::schema::ErrorBody;
use crate::http::AppState;

/// The operations routes; `/metrics` among them unless it is served on an
/// address of its own (`with_metrics` false).
pub fn router(with_metrics: bool) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz));
    let router = if with_metrics {
        router.routes(routes!(crate::http::observe::metrics))
    } else {
        router
    };
    router
        .routes(routes!(openapi_yaml))
        .routes(routes!(openapi_json))
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`.
    #[schema(value_type = String)]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
struct Ready {
    /// `ok`.
    #[schema(value_type = String)]
    status: &'static str,
    /// The backend in use: `sqlite` or `postgres`.
    #[schema(value_type = String)]
    database: &'static str,
}

/// The process is alive; touches nothing else.
#[utoipa::path(
    get, path = "/healthz", tag = "operations", operation_id = "healthz",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers: 200, else 503.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "readyz",
    summary = "Readiness: the database answers",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "The database does not answer (`10001`)", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, Error> {
    state.store.ping().await?;
    Ok(Json(Ready {
        status: "ok",
        database: state.store.backend(),
    }))
}

/// This document, as YAML.
#[utoipa::path(
    get, path = "/openapi.yaml", tag = "operations", operation_id = "openapi_yaml",
    summary = "This API description (OpenAPI 3.1, YAML)",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/yaml", body = Object))
)]
async fn openapi_yaml() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        crate::http::OPENAPI_YAML.as_str(),
    )
}

/// This document, as JSON.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi_json",
    summary = "This API description (OpenAPI 3.1, JSON)",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::http::OPENAPI_JSON.as_str(),
    )
}
