//! `pushtoken`: a self-hosted server for the push-token API of the
//! DingDing Smart video-doorbell app.

pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod model;
pub mod notify_client;
pub mod providers;
pub mod push;
pub mod secrets;
pub mod server;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::Config;
pub use http::{app, metrics_app, AppState};
use secrets::Passwords;
use store::{Family, Store};

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Opens the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url, &config.pool, &config.cache)
        .await
        .context("cannot open the database")?;
    store
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    Ok(store)
}

/// Builds the state the router runs on.
pub async fn state(config: Config) -> anyhow::Result<AppState> {
    http::observe::install_recorder();
    let store = open_store(&config).await?;
    // Ends when the store closes.
    store.hear_others();
    let passwords = Passwords::new(config.password_cost.clone(), config.hash_queue)?;
    let limits = Arc::new(http::limits::Limits::new(&config));
    let push = Arc::new(
        push::Hub::new(
            store.clone(),
            &config,
            providers::configured(&config, store.clone())?,
        )
        .await
        .context("cannot load the push socket's token key")?,
    );
    Ok(AppState::new(http::Shared {
        store,
        config: Arc::new(config),
        passwords,
        limits,
        push,
    }))
}

/// Serves the API on `listener`, and the push socket (and `/metrics`, when
/// it has an address of its own) on its configured address, until
/// `shutdown` resolves, then lets in-flight requests finish (for at most the
/// configured grace period), closes the push connections and closes the
/// database.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let push = match config.push_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for the push socket"))?,
        ),
        None => None,
    };
    let metrics = match config.metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for /metrics"))?,
        ),
        None => None,
    };
    let state = state(config).await?;
    serve_state(state, listener, Listeners { push, metrics }, shutdown).await
}

/// The listeners besides the API's; each `None` when it is off.
#[derive(Default)]
pub struct Listeners {
    /// The push socket's.
    pub push: Option<TcpListener>,
    /// `/metrics`'s, when it is not served with the API.
    pub metrics: Option<TcpListener>,
}

/// [`serve`] with a state and the listeners already made.
pub async fn serve_state(
    state: AppState,
    listener: TcpListener,
    Listeners { push, metrics }: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match (&state.config.tls_cert, &state.config.tls_key) {
        (Some(cert), Some(key)) => Some(server::load_tls(cert, key)?),
        _ => None,
    };
    let stopping = tokio_util::sync::CancellationToken::new();
    let push = match push {
        Some(listener) => {
            let tls = push::tls_config(&state.config)?;
            let stopped = stopping.clone().cancelled_owned();
            Some(tokio::spawn(push::serve(
                state.push.clone(),
                listener,
                tls,
                stopped,
            )))
        }
        None => None,
    };
    let stop = stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stop.cancel();
    };
    let store = state.store.clone();
    let grace = state.config.shutdown_grace;
    let purge = tokio::spawn(housekeeping(state.clone()));
    let hygiene = tokio::spawn(token_hygiene(state.clone()));
    let fold = tokio::spawn(async {
        let mut every = tokio::time::interval(http::observe::UPKEEP_EVERY);
        loop {
            every.tick().await;
            http::observe::fold_latency_samples();
        }
    });
    let counts = tokio::spawn(http::observe::refresh_row_counts_every(
        store.clone(),
        state.config.metrics_refresh,
    ));
    let metrics = match metrics {
        Some(listener) => {
            let address = listener.local_addr()?;
            tracing::info!(%address, "serving /metrics on http://{address}/metrics");
            let stopped = stopping.clone().cancelled_owned();
            Some(tokio::spawn(server::run(
                listener,
                None,
                metrics_app(state.clone()),
                stopped,
                grace,
            )))
        }
        None => None,
    };
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "serving plain HTTP on {address}, which is not a loopback address: passwords and \
             session tokens cross the network unencrypted; set PUSHTOKEN_TLS_CERT and \
             PUSHTOKEN_TLS_KEY, or put a proxy that terminates TLS in front"
        );
    }
    tracing::info!(%address, scheme, backend = store.backend(), "listening on {address}");
    server::run(listener, tls, app(state), shutdown, grace)
        .await
        .context("server failed")?;
    stopping.cancel();
    if let Some(push) = push {
        let _ = push.await;
    }
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    purge.abort();
    hygiene.abort();
    fold.abort();
    counts.abort();
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Once an hour, [`tidy`].
async fn housekeeping(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        tidy(&state, unix_now()).await;
    }
}

/// Deletes dead sessions, queued deliveries whose ttl ran out and events
/// past their retention as of `now` (unix seconds), and forgets idle
/// rate-limit state.
pub async fn tidy(state: &AppState, now: i64) {
    state.limits.sweep();
    match state.store.purge_expired_sessions(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
        Err(e) => tracing::warn!(error = %e, "could not purge expired sessions"),
    }
    let retention = state.config.event_retention.as_secs() as i64;
    match state
        .store
        .purge_events(now.saturating_sub(retention), now)
        .await
    {
        Ok(purged) => {
            for (family, n) in &purged.expired {
                push::count_expired(family, *n);
            }
            if purged.events > 0 {
                tracing::info!(events = purged.events, "purged events past their retention");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not purge old events"),
    }
}

/// Rows one statement of the stale-token sweep deletes at most.
pub const STALE_TOKEN_BATCH: i64 = 256;

/// The sweep's pause between two batches, in which other writes go first.
const STALE_TOKEN_PAUSE: Duration = Duration::from_millis(20);

/// How often the stale-token sweep runs for a token max age of `max_age`:
/// every quarter of it, at most an hour apart.
pub fn stale_token_sweep_every(max_age: Duration) -> Duration {
    (max_age / 4).min(Duration::from_secs(3600))
}

/// [`sweep_stale_tokens`] at startup, then every quarter of the configured
/// max age, at most an hour apart ([`stale_token_sweep_every`]).
async fn token_hygiene(state: AppState) {
    let every = stale_token_sweep_every(state.config.token_max_age);
    let mut every = tokio::time::interval(every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        sweep_stale_tokens(&state, unix_now()).await;
    }
}

/// Deletes the push tokens (of both families) that have not been registered
/// again (a PUT or POST of the token, even one that changes nothing) for
/// `PUSHTOKEN_TOKEN_MAX_AGE` as of `now` (unix seconds): in batches of
/// [`STALE_TOKEN_BATCH`] rows, each a statement of its own with a short
/// pause after it, so the sweep never holds the SQLite writer or
/// PostgreSQL's row locks for long. Counts them in
/// `pushtoken_stale_tokens_removed_total{family}` and logs how many (never
/// which). How many it deleted.
pub async fn sweep_stale_tokens(state: &AppState, now: i64) -> u64 {
    let max_age = i64::try_from(state.config.token_max_age.as_secs()).unwrap_or(i64::MAX);
    let before = now.saturating_sub(max_age);
    // Rows removed over every batch.
    let mut removed = store::ByFamily::default();
    loop {
        let batch = match state
            .store
            .delete_stale_push_tokens(before, STALE_TOKEN_BATCH)
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "could not remove stale push tokens");
                break;
            }
        };
        for family in Family::ALL {
            let n = batch.of(family);
            if n > 0 {
                http::observe::count_stale_tokens_removed(family.as_str(), n);
            }
        }
        removed.ring += batch.ring;
        removed.message += batch.message;
        if batch.total() < STALE_TOKEN_BATCH as u64 {
            break;
        }
        tokio::time::sleep(STALE_TOKEN_PAUSE).await;
    }
    let total = removed.total();
    if total > 0 {
        // (Not a field `message`: that is the log line's text.)
        tracing::info!(
            tokens = total,
            ring_tokens = removed.ring,
            message_tokens = removed.message,
            "removed push tokens not registered again within PUSHTOKEN_TOKEN_MAX_AGE"
        );
    }
    total
}

/// Resolves on SIGTERM or ctrl-c.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed now, not when the future is first polled:
    // a signal that comes as soon as the server says it listens is a
    // graceful stop, not the default action (death).
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                () = received(terminate) => {},
                () = received(interrupt) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::stale_token_sweep_every;

    #[test]
    fn the_stale_token_sweep_runs_every_quarter_of_the_max_age_at_most_an_hour_apart() {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        assert_eq!(
            stale_token_sweep_every(days(270)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            stale_token_sweep_every(Duration::from_secs(4 * 3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            stale_token_sweep_every(Duration::from_secs(2 * 3600)),
            Duration::from_secs(1800)
        );
        assert_eq!(
            stale_token_sweep_every(Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        // The shortest max age a setting takes, one second.
        assert_eq!(
            stale_token_sweep_every(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
    }
}
