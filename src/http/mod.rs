//! The HTTP API: routers of each concern, merged under one middleware stack.

mod accounts;
mod events;
pub mod extract;
pub mod limits;
mod notify;
pub(crate) mod observe;
mod ops;
mod push_tokens;
pub mod schema;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use schema::ApiDoc;

use crate::config::Config;
use crate::error::Error;
use crate::secrets::Passwords;
use crate::store::Store;

/// What every handler can reach; one allocation shared by all requests, so
/// the clone each request makes is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: Store,
    pub config: Arc<Config>,
    pub passwords: Passwords,
    pub limits: Arc<limits::Limits>,
    pub push: Arc<crate::push::Hub>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Request ids for requests that come without one: a random prefix drawn
/// at startup and a counter, unique without a system call per request.
#[derive(Clone, Copy, Default)]
struct NextRequestId;

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        static PREFIX: LazyLock<u64> = LazyLock::new(rand::random);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{n:x}", *PREFIX);
        axum::http::HeaderValue::try_from(id)
            .ok()
            .map(RequestId::new)
    }
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes and the OpenAPI document that describes them, built together
/// from the handlers' annotations.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(push_tokens::router())
        .merge(notify::router())
        .merge(events::router())
        .merge(ops::router())
        .split_for_parts()
}

/// The OpenAPI document of this server.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The document as served at `/openapi.yaml` and `/openapi.json`, built
/// once.
static OPENAPI: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(openapi);
static OPENAPI_YAML: LazyLock<String> =
    LazyLock::new(|| OPENAPI.to_yaml().expect("the OpenAPI document serializes"));
static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    OPENAPI
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

/// The whole API as a router.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let docs = SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json"));
    routes()
        .0
        .merge(docs)
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::bound,
        ))
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, NextRequestId))
        .with_state(state)
}
