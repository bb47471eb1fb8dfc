//! Per-request observation: one log line and the request metrics, both by
//! route template; and the Prometheus exposition at `/metrics`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::http::client::ClientAddress;
use crate::http::{AppState, RefusedRequestId, REQUEST_ID};
use crate::store::{Family, Store};
use crate::unix_now;

const REQUESTS: &str = "pushtoken_http_requests_total";
const DURATION: &str = "pushtoken_http_request_duration_seconds";

/// The process-wide metrics recorder (installed on first use).
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let builder = [DURATION, crate::push::DELIVERY_SECONDS]
            .into_iter()
            .try_fold(PrometheusBuilder::new(), |builder, name| {
                builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), &buckets)
            })
            .expect("histogram buckets are not empty");
        match builder.install_recorder() {
            Ok(handle) => {
                metrics::describe_counter!(
                    REQUESTS,
                    "HTTP requests answered, by route template, method and status"
                );
                metrics::describe_histogram!(
                    DURATION,
                    metrics::Unit::Seconds,
                    "HTTP request latency, by route template and method"
                );
                metrics::describe_gauge!("pushtoken_push_tokens", "Stored push tokens, by family");
                metrics::describe_gauge!("pushtoken_active_sessions", "Unexpired sessions");
                metrics::describe_gauge!(
                    "pushtoken_db_pool_connections",
                    "Database connections, by state (idle, in_use)"
                );
                metrics::describe_gauge!(
                    "pushtoken_db_pool_max_connections",
                    "Most database connections the pool holds"
                );
                metrics::describe_counter!(
                    "pushtoken_db_write_batches_total",
                    "SQLite: write transactions committed (each holds the writes queued together)"
                );
                metrics::describe_counter!(
                    "pushtoken_db_batched_writes_total",
                    "SQLite: writes committed in those transactions"
                );
                metrics::describe_gauge!(
                    "pushtoken_database_up",
                    "1 when the database answered the last count of stored rows"
                );
                metrics::describe_gauge!(
                    "pushtoken_push_connections",
                    "Push-socket connections this instance holds"
                );
                metrics::describe_counter!(
                    "pushtoken_push_frames_total",
                    "Push-socket frames, by direction (in, out) and command"
                );
                metrics::describe_counter!("pushtoken_events_total", "Events sent, by family");
                metrics::describe_counter!(
                    crate::push::DELIVERIES,
                    "Deliveries of events to push-socket tokens, by family and outcome: \
                     queued (the token was not connected), delivered (its frame was written), \
                     expired (its ttl ran out unsent)"
                );
                metrics::describe_counter!(
                    crate::providers::PUSHES,
                    "Pushes through the phone makers' services, by provider and outcome: sent, \
                     failed, pruned (a dead token's row deleted), retried (each retry)"
                );
                metrics::describe_gauge!(
                    crate::providers::WAITING_GAUGE,
                    "Pushes waiting for or being handled by a provider, by provider"
                );
                metrics::describe_counter!(
                    crate::store::CACHE_LOOKUPS,
                    "Lookups of kept sessions and row lists, by cache (sessions, rows) and \
                     outcome (hit, miss)"
                );
                metrics::describe_counter!(
                    STALE_TOKENS_REMOVED,
                    "Push tokens removed by the sweep for not being registered again within \
                     PUSHTOKEN_TOKEN_MAX_AGE, by family"
                );
                metrics::describe_histogram!(
                    crate::push::DELIVERY_SECONDS,
                    metrics::Unit::Seconds,
                    "From an event's recording to its frame written, for connections held when it \
                     was sent (on any instance)"
                );
                handle
            }
            // Another recorder is installed (a host program's): render ours
            // from a recorder of our own that nothing records into.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Push tokens the stale-token sweep removed, by family.
pub const STALE_TOKENS_REMOVED: &str = "pushtoken_stale_tokens_removed_total";

/// Counts `n` push tokens of `family` removed by the stale-token sweep.
pub fn count_stale_tokens_removed(family: &str, n: u64) {
    metrics::counter!(STALE_TOKENS_REMOVED, "family" => family.to_owned()).increment(n);
}

/// Installs the metrics recorder, so that what happens before the first
/// request (a push connection, a sweep) is counted.
pub fn install_recorder() {
    recorder();
}

/// Folds the latency samples recorded since the last call into the
/// histograms' buckets. Until then the recorder holds every sample (about
/// 16 bytes per request), and only a scrape folds them otherwise: a server nobody
/// scrapes would grow without bound. The server calls this every few
/// seconds ([`UPKEEP_EVERY`]).
pub fn fold_latency_samples() {
    recorder().run_upkeep();
}

/// How often the server folds latency samples into the histograms.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Probes and scrapes: they come every few seconds, so they are logged at
/// debug level.
pub(crate) fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// Health probes pass the in-flight cap (a busy server is alive, and
/// should not be restarted for being busy); every other route, `/metrics`
/// too, counts towards it.
pub(crate) fn passes_the_cap(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz")
}

/// The request metrics of one (route, method, status), registered once.
struct Handles {
    duration: metrics::Histogram,
    requests: metrics::Counter,
}

/// A registered (route, method, status) and its handles.
struct Entry {
    route: String,
    method: &'static str,
    status: u16,
    handles: Arc<Handles>,
}

/// Handles by the hash of their labels, so recording a request allocates
/// nothing and looks nothing up in the recorder's registry.
static HANDLES: LazyLock<RwLock<HashMap<u64, Vec<Entry>>>> = LazyLock::new(Default::default);

/// The method as a label: the standard ones by name, any other as `other`
/// (a client cannot grow the metrics with made-up methods).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", |known| known.as_str())
}

fn handles(route: &str, method: &'static str, status: u16) -> Arc<Handles> {
    let mut hasher = DefaultHasher::new();
    (route, method, status).hash(&mut hasher);
    let key = hasher.finish();
    let matches = |e: &&Entry| e.route == route && e.method == method && e.status == status;
    let cache = HANDLES.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = cache.get(&key).and_then(|list| list.iter().find(matches)) {
        return entry.handles.clone();
    }
    drop(cache);
    let mut cache = HANDLES.write().unwrap_or_else(PoisonError::into_inner);
    let list = cache.entry(key).or_default();
    if let Some(entry) = list.iter().find(matches) {
        return entry.handles.clone();
    }
    let labels = [("route", route.to_owned()), ("method", method.to_owned())];
    let duration = metrics::histogram!(DURATION, &labels);
    let [route_label, method_label] = labels;
    let requests = metrics::counter!(
        REQUESTS,
        &[route_label, method_label, ("status", status.to_string())]
    );
    let handles = Arc::new(Handles { duration, requests });
    list.push(Entry {
        route: route.to_owned(),
        method,
        status,
        handles: handles.clone(),
    });
    handles
}

/// Logs one line per request (request id, method, route, client address,
/// status, latency) and records the request metrics. Runs inside routing, so
/// the route is the template (`/v1/api/user/token/{serial}`), never a serial
/// or other value. Finds the client's address (see [`ClientAddress`]) and
/// leaves it in the request for the limits.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    recorder();
    let client = ClientAddress::of(&request, &state.config.trusted_proxies);
    request.extensions_mut().insert(client);
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", |path| path.as_str());
    let method = method_label(request.method());
    let id = request.headers().get(REQUEST_ID).cloned();
    let id = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    let client = client.0;
    let span = tracing::info_span!("request", %id, %method, %route, %client);
    if let Some(RefusedRequestId { length }) = request.extensions().get() {
        span.in_scope(|| {
            tracing::debug!(
                length,
                "the client's x-request-id is not 1-64 characters of A-Z a-z 0-9 . _ -: replaced"
            );
        });
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        let latency_ms = latency.as_secs_f64() * 1e3;
        if is_probe(route) {
            tracing::debug!(status, latency_ms, "answered");
        } else {
            tracing::info!(status, latency_ms, "answered");
        }
    });
    let handles = handles(route, method, status);
    handles.duration.record(latency.as_secs_f64());
    handles.requests.increment(1);
    response
}

/// Counts the stored push tokens by family and the active sessions into
/// their gauges, and sets `pushtoken_database_up` to whether the database
/// answered. Full-table counts: the server runs this in the background every
/// `PUSHTOKEN_METRICS_REFRESH` ([`refresh_row_counts_every`]), never per
/// scrape, so scraping costs the database nothing.
pub async fn refresh_row_counts(store: &Store) {
    recorder();
    let counts = store.count_push_tokens().await;
    let sessions = store.count_active_sessions(unix_now()).await;
    match (counts, sessions) {
        (Ok(counts), Ok(sessions)) => {
            for family in Family::ALL {
                let stored = counts
                    .iter()
                    .find(|(f, _)| f == family.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("pushtoken_push_tokens", "family" => family.as_str())
                    .set(stored as f64);
            }
            metrics::gauge!("pushtoken_active_sessions").set(sessions as f64);
            metrics::gauge!("pushtoken_database_up").set(1.0);
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "metrics: database unavailable");
            metrics::gauge!("pushtoken_database_up").set(0.0);
        }
    }
}

/// [`refresh_row_counts`] at once, then every `every`, for ever.
pub async fn refresh_row_counts_every(store: Store, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        refresh_row_counts(&store).await;
    }
}

/// The Prometheus text exposition: request metrics, stored push tokens by
/// family and active sessions (as last counted in the background), and
/// database pool use. Reads no table.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    summary = "Metrics in the Prometheus text format",
    responses((status = 200, description = "The metrics", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let handle = recorder();
    let store = &state.store;
    let pool = store.pool_stats();
    metrics::gauge!("pushtoken_db_pool_connections", "state" => "idle").set(pool.idle as f64);
    metrics::gauge!("pushtoken_db_pool_connections", "state" => "in_use")
        .set(pool.size.saturating_sub(pool.idle) as f64);
    metrics::gauge!("pushtoken_db_pool_max_connections").set(pool.max as f64);
    if let Some((batches, writes)) = store.write_batches() {
        metrics::counter!("pushtoken_db_write_batches_total").absolute(batches);
        metrics::counter!("pushtoken_db_batched_writes_total").absolute(writes);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod memory_tests {
    use super::*;

    /// Bytes the allocator has handed out and not had back.
    fn heap_in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.uordblks
    }

    #[test]
    fn latency_samples_are_freed_once_folded_into_the_histograms() {
        recorder();
        let handles = handles("/test/folding", "GET", 200);
        fold_latency_samples();
        // The heap is the process's: another test allocating at the same
        // time shows as growth. Such growth passes, a leak does not, so
        // the least growth of a few rounds is what counts.
        let mut least = usize::MAX;
        for _ in 0..5 {
            let before = heap_in_use();
            // 2,000,000 requests' samples, folded every 10,000 like a
            // server folding every few seconds: unfolded they would hold
            // about 33 MB.
            for _ in 0..200 {
                for _ in 0..10_000 {
                    handles.duration.record(0.001);
                }
                fold_latency_samples();
            }
            least = least.min(heap_in_use().saturating_sub(before));
            if least < 4 << 20 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(
            least < 4 << 20,
            "the heap grew by at least {least} bytes over 2,000,000 folded samples"
        );
        let rendered = recorder().render();
        let count = rendered
            .lines()
            .find(|l| l.starts_with(&format!("{DURATION}_count")) && l.contains("/test/folding"))
            .expect("the histogram is rendered");
        let folded: u64 = count.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(folded % 2_000_000, 0, "{count}");
    }
}
