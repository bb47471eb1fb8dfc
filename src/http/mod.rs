//! The HTTP API: routers of each concern, merged under one middleware stack.

mod accounts;
pub mod client;
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

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use tower::util::MapRequestLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::PropagateRequestIdLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use observe::refresh_row_counts;
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

/// A new request id: a random prefix drawn at startup and a counter,
/// unique without a system call per request (at most 33 characters of
/// `0-9 a-f -`).
fn new_request_id() -> HeaderValue {
    static PREFIX: LazyLock<u64> = LazyLock::new(rand::random);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{:016x}-{n:x}", *PREFIX))
        .expect("hex digits and a dash make a header value")
}

/// Whether a client's request id is kept: 1–64 characters of
/// `A-Z a-z 0-9 . _ -` (safe in a log line and in a header).
pub fn is_usable_request_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Left in a request whose own `x-request-id` was replaced: its length, for
/// the log (the value itself may be anything, of any size).
#[derive(Clone, Copy)]
pub(crate) struct RefusedRequestId {
    pub length: usize,
}

/// Gives the request exactly one usable `x-request-id`, which its answer
/// carries back: the one it came with when that is usable, else a new one.
fn set_request_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut sent = headers.get_all(REQUEST_ID).iter();
    let (first, more) = (sent.next().cloned(), sent.next().is_some());
    match first {
        Some(own) if is_usable_request_id(own.as_bytes()) => {
            if more {
                headers.insert(REQUEST_ID, own);
            }
        }
        refused => {
            headers.insert(REQUEST_ID, new_request_id());
            if let Some(refused) = refused {
                let length = refused.len();
                request.extensions_mut().insert(RefusedRequestId { length });
            }
        }
    }
    request
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes and the OpenAPI document that describes them, built together
/// from the handlers' annotations; `/metrics` among them when `with_metrics`.
fn routes(with_metrics: bool) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(push_tokens::router())
        .merge(notify::router())
        .merge(events::router())
        .merge(ops::router(with_metrics))
        .split_for_parts()
}

/// The OpenAPI document of this server (which has `/metrics`, on the API's
/// address or on its own).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(true).1
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

/// The whole API as a router; without `/metrics` when
/// `PUSHTOKEN_METRICS_LISTEN` serves it elsewhere ([`metrics_app`]).
pub fn app(state: AppState) -> Router {
    let docs = SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json"));
    let with_metrics = state.config.metrics_listen.is_none();
    stack(routes(with_metrics).0.merge(docs), state)
}

/// `/metrics` alone, for its own address (`PUSHTOKEN_METRICS_LISTEN`), under
/// the same middleware as the API: logged, and counted towards the same
/// in-flight cap.
pub fn metrics_app(state: AppState) -> Router {
    let metrics = Router::new().route("/metrics", axum::routing::get(observe::metrics));
    stack(metrics, state)
}

/// `routes` under the middleware stack every request passes, and the JSON
/// answers of an unknown route or method.
fn stack(routes: Router<AppState>, state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    routes
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(MapRequestLayer::new(set_request_id))
        .with_state(state)
}
