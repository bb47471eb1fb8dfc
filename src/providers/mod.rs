//! Phones without a push-socket connection: the phone makers' push services.
//! A row the socket did not issue goes to the service its fields name
//! ([`route`]); each service is a [`Provider`], off until configured. A push
//! that fails for a while (429, 5xx, a timeout, a dropped connection) is
//! tried again with exponential backoff and jitter, or after the service's
//! `Retry-After`, while the event's ttl lasts; a verdict that the token is
//! dead deletes its row. Each service has a lane of its own, with bounded
//! waiting and bounded concurrency: a service that is slow or down delays
//! neither the socket, nor the REST routes, nor the other services.

pub mod apns;
mod client;
pub mod fcm;
pub mod huawei;
mod oauth;
pub mod xiaomi;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, Semaphore};
use utoipa::ToSchema;

pub use client::http_client;

use crate::store::{Family, Recipient, Store};
use crate::unix_now_ms;

/// The phone makers' services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Apns,
    Fcm,
    Huawei,
    Xiaomi,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Apns,
        ProviderKind::Fcm,
        ProviderKind::Huawei,
        ProviderKind::Xiaomi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Apns => "apns",
            ProviderKind::Fcm => "fcm",
            ProviderKind::Huawei => "huawei",
            ProviderKind::Xiaomi => "xiaomi",
        }
    }
}

/// Where a row's event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The push socket issued its token.
    Socket,
    Provider(ProviderKind),
    /// Nothing takes it (an unknown `push_platform`).
    Skip,
}

/// The service a row names: an `os_token` goes by its `push_platform` (FCM,
/// HUAWEI, XIAOMI, in any case); without one, a 64-hex `push_token` with no
/// platform, or `ios`, is an APNs device token.
pub fn route(row: &Recipient) -> Route {
    if row.socket {
        return Route::Socket;
    }
    let platform = row.push_platform.to_ascii_uppercase();
    if row.os_token.is_empty() {
        let apple = platform.is_empty() || platform == "IOS";
        let hex =
            row.push_token.len() == 64 && row.push_token.bytes().all(|b| b.is_ascii_hexdigit());
        return if apple && hex {
            Route::Provider(ProviderKind::Apns)
        } else {
            Route::Skip
        };
    }
    match platform.as_str() {
        "FCM" => Route::Provider(ProviderKind::Fcm),
        "HUAWEI" => Route::Provider(ProviderKind::Huawei),
        "XIAOMI" => Route::Provider(ProviderKind::Xiaomi),
        _ => Route::Skip,
    }
}

/// One event on its way to one row.
#[derive(Clone, Debug)]
pub struct Push {
    /// The socket frame's JSON: the event with its `id`, `family` and
    /// `time`.
    pub payload: Arc<Map<String, Value>>,
    pub family: Family,
    /// Seconds the event may wait (0: one attempt).
    pub ttl: i64,
    /// When it stops being worth sending, in unix milliseconds.
    pub expires_ms: i64,
    /// The row it is for.
    pub user_id: i64,
    pub serial: i64,
    pub push_token: String,
    pub os_token: String,
    pub bundleid: String,
    /// APNs: the sandbox (`dev` 1) rather than production.
    pub sandbox: bool,
}

impl Push {
    /// The payload as JSON text.
    pub fn payload_text(&self) -> String {
        serde_json::to_string(&*self.payload).unwrap_or_default()
    }

    /// A service's words about this push, its tokens blotted out (an
    /// answer may quote them; tokens are never logged).
    pub fn redacted(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for token in [&self.push_token, &self.os_token] {
            if !token.is_empty() {
                text = text.replace(token.as_str(), "[token]");
            }
        }
        text
    }

    /// The event's device uid (for collapsing rings of one doorbell).
    pub fn uid(&self) -> &str {
        self.payload
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A service's answer to one push.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    /// The token is dead: its row goes.
    Dead,
    /// Refused for another reason: the row stays, the push is not retried.
    Refused(String),
    /// Worth another try: after `after` when the service said so.
    Retry {
        after: Option<Duration>,
        why: String,
    },
}

impl Verdict {
    /// A request that never reached the service: worth another try.
    pub(crate) fn unreachable(error: reqwest::Error) -> Self {
        Verdict::Retry {
            after: None,
            why: format!("cannot reach the service: {error}"),
        }
    }
}

/// A push service.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// One attempt to deliver `push`.
    async fn send(&self, push: &Push) -> Verdict;
}

/// What finally became of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Failed,
    /// The service said the token is dead and its row was deleted.
    Pruned,
}

/// Pushes of one event through one service, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tally {
    #[schema(minimum = 0)]
    pub sent: u64,
    #[schema(minimum = 0)]
    pub failed: u64,
    #[schema(minimum = 0)]
    pub pruned: u64,
}

impl Tally {
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Sent => self.sent += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Pruned => self.pruned += 1,
        }
    }
}

/// Each service's tally for one event (all four, configured or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tallies {
    pub apns: Tally,
    pub fcm: Tally,
    pub huawei: Tally,
    pub xiaomi: Tally,
}

impl Tallies {
    pub fn of(&mut self, kind: ProviderKind) -> &mut Tally {
        match kind {
            ProviderKind::Apns => &mut self.apns,
            ProviderKind::Fcm => &mut self.fcm,
            ProviderKind::Huawei => &mut self.huawei,
            ProviderKind::Xiaomi => &mut self.xiaomi,
        }
    }
}

/// Pushes a service works on at once.
const IN_FLIGHT: usize = 64;
/// Pushes that may wait for a service (its retries included); more fail at
/// once.
const WAITING: usize = 10_000;
/// The longest one attempt may take.
const ATTEMPT_WITHIN: Duration = Duration::from_secs(10);
/// The first retry's delay; each next one doubles, up to [`LONGEST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LONGEST_RETRY: Duration = Duration::from_secs(60);

/// `pushtoken_provider_pushes_total`: provider pushes by provider and
/// outcome (sent, failed, pruned, retried).
pub const PUSHES: &str = "pushtoken_provider_pushes_total";
/// `pushtoken_provider_waiting`: pushes waiting for a provider, by provider.
pub const WAITING_GAUGE: &str = "pushtoken_provider_waiting";

/// The configured services, each in its lane.
#[derive(Clone)]
pub struct Providers {
    store: Store,
    lanes: Arc<HashMap<ProviderKind, Lane>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<_> = self.lanes.keys().map(|k| k.as_str()).collect();
        f.debug_struct("Providers")
            .field("configured", &kinds)
            .finish()
    }
}

#[derive(Clone)]
struct Lane {
    kind: ProviderKind,
    provider: Arc<dyn Provider>,
    in_flight: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
}

impl Providers {
    pub fn new(store: Store, configured: Vec<(ProviderKind, Arc<dyn Provider>)>) -> Self {
        let lanes = configured
            .into_iter()
            .map(|(kind, provider)| {
                let lane = Lane {
                    kind,
                    provider,
                    in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
                    waiting: Arc::new(Semaphore::new(WAITING)),
                };
                (kind, lane)
            })
            .collect();
        Providers {
            store,
            lanes: Arc::new(lanes),
        }
    }

    /// Whether `kind` is configured.
    pub fn has(&self, kind: ProviderKind) -> bool {
        self.lanes.contains_key(&kind)
    }

    /// Sends `push` through `kind` in the background, retried while its ttl
    /// lasts: its outcome, once decided. A service that is not configured,
    /// or whose lane is full, fails it at once.
    pub fn send(&self, kind: ProviderKind, push: Push) -> oneshot::Receiver<Outcome> {
        let (decided, outcome) = oneshot::channel();
        let Some(lane) = self.lanes.get(&kind).cloned() else {
            let _ = decided.send(Outcome::Failed);
            return outcome;
        };
        let Ok(place) = lane.waiting.clone().try_acquire_owned() else {
            tracing::warn!(
                provider = kind.as_str(),
                "a provider's queue is full; a push fails"
            );
            count(kind, "failed");
            let _ = decided.send(Outcome::Failed);
            return outcome;
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            metrics::gauge!(WAITING_GAUGE, "provider" => kind.as_str()).increment(1.0);
            let outcome = lane.run(&push, &store).await;
            metrics::gauge!(WAITING_GAUGE, "provider" => kind.as_str()).decrement(1.0);
            drop(place);
            let _ = decided.send(outcome);
        });
        outcome
    }
}

impl Lane {
    /// Tries `push` until it is decided.
    async fn run(&self, push: &Push, store: &Store) -> Outcome {
        let provider = self.kind.as_str();
        let mut retries = 0;
        loop {
            let verdict = {
                let Ok(_slot) = self.in_flight.acquire().await else {
                    return Outcome::Failed;
                };
                match tokio::time::timeout(ATTEMPT_WITHIN, self.provider.send(push)).await {
                    Ok(verdict) => verdict,
                    Err(_) => Verdict::Retry {
                        after: None,
                        why: "no answer in time".into(),
                    },
                }
            };
            match verdict {
                Verdict::Sent => {
                    count(self.kind, "sent");
                    return Outcome::Sent;
                }
                Verdict::Dead => return self.prune(push, store).await,
                Verdict::Refused(why) => {
                    let why = push.redacted(&why);
                    tracing::warn!(provider, user_id = push.user_id, serial = push.serial, reason = %why, "a provider refused a push");
                    count(self.kind, "failed");
                    return Outcome::Failed;
                }
                Verdict::Retry { after, why } => {
                    let why = push.redacted(&why);
                    retries += 1;
                    let wait = after.unwrap_or_else(|| backoff(retries));
                    let left = push.expires_ms - unix_now_ms();
                    if wait.as_millis() as i64 >= left {
                        tracing::info!(provider, user_id = push.user_id, serial = push.serial, reason = %why, retries, "a push's ttl ran out before the provider took it");
                        count(self.kind, "failed");
                        return Outcome::Failed;
                    }
                    tracing::debug!(provider, reason = %why, wait_ms = wait.as_millis() as u64, "a push will be tried again");
                    count(self.kind, "retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Deletes the row of a token the service called dead, if it still
    /// holds that token.
    async fn prune(&self, push: &Push, store: &Store) -> Outcome {
        let provider = self.kind.as_str();
        let pruned = store
            .prune_push_token(
                push.family,
                push.user_id,
                push.serial,
                &push.push_token,
                &push.os_token,
            )
            .await;
        match pruned {
            Ok(true) => {
                tracing::info!(
                    provider,
                    user_id = push.user_id,
                    family = push.family.as_str(),
                    serial = push.serial,
                    "a provider called a token dead; its row is deleted"
                );
                count(self.kind, "pruned");
                Outcome::Pruned
            }
            Ok(false) => {
                // The row changed since: it is not the dead token's any more.
                count(self.kind, "failed");
                Outcome::Failed
            }
            Err(e) => {
                tracing::warn!(provider, error = %e, "cannot delete a dead token's row");
                count(self.kind, "failed");
                Outcome::Failed
            }
        }
    }
}

fn count(kind: ProviderKind, outcome: &'static str) {
    metrics::counter!(PUSHES, "provider" => kind.as_str(), "outcome" => outcome).increment(1);
}

/// The delay before retry number `retries` (from 1): doubling from
/// [`FIRST_RETRY`] up to [`LONGEST_RETRY`], each drawn at random from its
/// upper half so that pushes failed together do not come back together.
fn backoff(retries: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1 << retries.saturating_sub(1).min(16));
    let ceiling = doubled.min(LONGEST_RETRY);
    let floor = ceiling / 2;
    floor + rand::thread_rng().gen_range(Duration::ZERO..=ceiling - floor)
}

/// The providers `config` sets up, sharing one HTTP client (APNs, and
/// FCM's messages when its URL is HTTPS, have HTTP/2-only ones of their
/// own).
pub fn configured(config: &crate::Config, store: Store) -> anyhow::Result<Providers> {
    let client = http_client(config.provider_ca_file.as_deref())?;
    let mut configured: Vec<(ProviderKind, Arc<dyn Provider>)> = Vec::new();
    if let Some(a) = &config.apns {
        let client = client::http2_client(config.provider_ca_file.as_deref())?;
        let apns = apns::Apns::new(client, &a.url, &a.sandbox_url, a.key.clone())?;
        configured.push((ProviderKind::Apns, Arc::new(apns)));
    }
    if let Some(f) = &config.fcm {
        let sender = if f.url.starts_with("https://") {
            client::http2_client(config.provider_ca_file.as_deref())?
        } else {
            client.clone()
        };
        let fcm = fcm::Fcm::new(client.clone(), sender, &f.url, f.account.clone())?;
        configured.push((ProviderKind::Fcm, Arc::new(fcm)));
    }
    if let Some(h) = &config.huawei {
        let huawei = huawei::Huawei::new(
            client.clone(),
            &h.url,
            &h.token_url,
            h.app_id.clone(),
            h.secret.clone(),
        );
        configured.push((ProviderKind::Huawei, Arc::new(huawei)));
    }
    if let Some(x) = &config.xiaomi {
        let xiaomi = xiaomi::Xiaomi::new(client.clone(), &x.url, x.secret.clone());
        configured.push((ProviderKind::Xiaomi, Arc::new(xiaomi)));
    }
    for (kind, _) in &configured {
        tracing::info!(provider = kind.as_str(), "push provider configured");
    }
    Ok(Providers::new(store, configured))
}

/// `Retry-After` in seconds (the services send seconds, not dates).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(socket: bool, push_token: &str, os_token: &str, platform: &str) -> Recipient {
        Recipient {
            serial: 1,
            push_token: push_token.into(),
            socket,
            held_by: None,
            dev: 0,
            bundleid: "com.example.app".into(),
            os_token: os_token.into(),
            push_platform: platform.into(),
        }
    }

    #[test]
    fn rows_go_to_the_service_their_fields_name() {
        let hex = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        let not_hex = "g".repeat(64);
        for (recipient, expected) in [
            (row(true, hex, "", ""), Route::Socket),
            (row(true, hex, "fcm-token", "FCM"), Route::Socket),
            (row(false, hex, "", ""), Route::Provider(ProviderKind::Apns)),
            (
                row(false, hex, "", "iOS"),
                Route::Provider(ProviderKind::Apns),
            ),
            (row(false, hex, "", "FCM"), Route::Skip),
            (row(false, &not_hex, "", ""), Route::Skip),
            (row(false, &hex[..63], "", ""), Route::Skip),
            (
                row(false, hex, "t", "fcm"),
                Route::Provider(ProviderKind::Fcm),
            ),
            (
                row(false, hex, "t", "Huawei"),
                Route::Provider(ProviderKind::Huawei),
            ),
            (
                row(false, hex, "t", "XIAOMI"),
                Route::Provider(ProviderKind::Xiaomi),
            ),
            (row(false, hex, "t", "OPPO"), Route::Skip),
            (row(false, hex, "t", ""), Route::Skip),
            (row(false, hex, "t", "ios"), Route::Skip),
        ] {
            let named = (
                recipient.socket,
                &recipient.os_token,
                &recipient.push_platform,
            );
            assert_eq!(route(&recipient), expected, "{named:?}");
        }
    }

    #[test]
    fn a_services_words_are_logged_without_the_pushs_tokens() {
        let push = Push {
            payload: Arc::new(Map::new()),
            family: Family::Ring,
            ttl: 60,
            expires_ms: 0,
            user_id: 1,
            serial: 1,
            push_token: "a".repeat(64),
            os_token: "regid-secret-1".into(),
            bundleid: "com.example".into(),
            sandbox: false,
        };
        let said = format!(
            "Invalid registration_id: regid-secret-1 ({})",
            "a".repeat(64)
        );
        assert_eq!(
            push.redacted(&said),
            "Invalid registration_id: [token] ([token])"
        );
        assert_eq!(push.redacted("quota exceeded"), "quota exceeded");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_minute() {
        for retries in 1..40 {
            let ceiling = FIRST_RETRY
                .saturating_mul(1 << (retries - 1).min(16))
                .min(LONGEST_RETRY);
            for _ in 0..20 {
                let wait = backoff(retries);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{retries}: {wait:?}"
                );
            }
        }
        assert!(backoff(1) <= FIRST_RETRY);
        assert!(backoff(30) >= LONGEST_RETRY / 2);
    }
}
