//! Abuse limits: password guessing per account, sign-up/login/refresh
//! bursts per client address, and a cap on requests in flight with a
//! timeout for each. All are per server instance.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::client::{self, ClientAddress};
use crate::http::observe::passes_the_cap;
use crate::http::AppState;

/// How long login attempts are counted against an account.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Accounts and unknown login names whose attempts are counted at once; the
/// least used beyond it are forgotten first.
const TRACKED_ACCOUNTS: u64 = 100_000;

pub struct Limits {
    max_failures: u32,
    /// Attempts by account, each from its first within the window.
    attempts: Cache<String, Arc<Mutex<Attempts>>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
}

/// The attempts counted against one account in its window.
struct Attempts {
    count: u32,
    since: Instant,
}

/// Whom a login attempt is counted against: an account (its username,
/// email and phone together), or a name that is nobody's.
pub enum Account<'a> {
    Id(i64),
    Unknown(&'a str),
}

impl Account<'_> {
    fn key(&self) -> String {
        match self {
            Account::Id(id) => format!("id:{id}"),
            Account::Unknown(name) => format!("name:{name}"),
        }
    }
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        let per_address = NonZeroU32::new(config.auth_rate_per_minute).map(|rate| {
            let burst = NonZeroU32::new(rate.get().min(100)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Limits {
            max_failures: config.login_max_failures,
            // An entry is changed in place, never replaced, so it lives from
            // an account's first counted attempt to the end of its window.
            attempts: Cache::builder()
                .max_capacity(TRACKED_ACCOUNTS)
                .time_to_live(FAILURE_WINDOW)
                .build(),
            per_address,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            request_timeout: config.request_timeout,
        }
    }

    /// Counts an attempt against `account` before its password is checked:
    /// 429 when the account has used up its attempts in this window, so
    /// that simultaneous guesses cannot all pass a check made before any is
    /// counted. The attempt stays counted as a failure unless it is
    /// [`Attempt::succeeded`] or [`Attempt::withdrawn`].
    pub fn attempt(&self, account: Account<'_>) -> Result<Attempt<'_>> {
        let key = account.key();
        if self.max_failures > 0 {
            let entry = self.attempts.get_with(key.clone(), || {
                Arc::new(Mutex::new(Attempts {
                    count: 0,
                    since: Instant::now(),
                }))
            });
            let mut attempts = entry.lock().unwrap_or_else(PoisonError::into_inner);
            if attempts.since.elapsed() >= FAILURE_WINDOW {
                *attempts = Attempts {
                    count: 0,
                    since: Instant::now(),
                };
            }
            if attempts.count >= self.max_failures {
                let left = FAILURE_WINDOW.saturating_sub(attempts.since.elapsed());
                return Err(Error::TooManyRequests {
                    retry_after_secs: left.as_secs() + 1,
                });
            }
            attempts.count += 1;
        }
        Ok(Attempt { limits: self, key })
    }

    /// 429 when `address` has made too many sign-up, login and refresh
    /// requests. An IPv6 address counts with its /64 (one host's share).
    fn check_address(&self, address: IpAddr) -> Result<()> {
        let Some(limiter) = &self.per_address else {
            return Ok(());
        };
        limiter.check_key(&rate_key(address)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::TooManyRequests {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }

    /// Forgets idle addresses and expired attempt windows.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.attempts.run_pending_tasks();
    }
}

/// A login attempt counted against its account.
pub struct Attempt<'a> {
    limits: &'a Limits,
    key: String,
}

impl Attempt<'_> {
    /// The password was right: the account's count starts again.
    pub fn succeeded(self) {
        self.limits.attempts.invalidate(&self.key);
    }

    /// The password was not checked (no place to hash it): the attempt
    /// does not count.
    pub fn withdrawn(self) {
        if let Some(entry) = self.limits.attempts.get(&self.key) {
            let mut attempts = entry.lock().unwrap_or_else(PoisonError::into_inner);
            attempts.count = attempts.count.saturating_sub(1);
        }
    }
}

/// What the per-address rate counts `address` under: an IPv4 address
/// itself, an IPv6 address's /64 (a host is given a /64 and picks any
/// address in it).
fn rate_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// The client's address: as the observation middleware found it (from
/// `X-Forwarded-For` when a trusted proxy sent the request), else the
/// connection's.
fn client_address(parts: &Parts, state: &AppState) -> IpAddr {
    match parts.extensions.get::<ClientAddress>() {
        Some(ClientAddress(address)) => *address,
        None => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip());
            client::client_address(peer, &parts.headers, &state.config.trusted_proxies)
        }
    }
}

/// Passes when the client address is within its sign-up/login/refresh rate.
pub struct AuthRate;

impl FromRequestParts<AppState> for AuthRate {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        state
            .limits
            .check_address(client_address(parts, state))
            .map(|()| AuthRate)
    }
}

/// Caps the requests in flight and bounds each by the request timeout: over
/// the cap a request is shed at once with 503 `server busy` (a flood cannot
/// pile up; health probes still pass, a busy server is alive), and one that
/// takes too long (a slow client, most often) gets 408 `request timeout`.
/// `/metrics` counts like any route: a scrape reads no table, but it is a
/// request that anyone who reaches the port can send.
pub async fn bound(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.limits;
    let probe = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| passes_the_cap(path.as_str()));
    let permit = match limits.in_flight.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) if probe => None,
        Err(_) => return Error::Busy.into_response(),
    };
    let response = match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Timeout.into_response(),
    };
    drop(permit);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_per_64_and_ipv4_per_address() {
        let key = |text: &str| rate_key(text.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::");
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    }
}
