//! Settings: flags with environment variables of the same meaning, checked
//! once at startup into a `Config`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::model::is_bundle_id;
use crate::store::{Backend, CacheOptions, PoolOptions};

#[derive(Parser)]
#[command(
    name = "pushtoken",
    version,
    about = "Self-hosted push-token server for DingDing Smart doorbell apps"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do (no `Debug`: `user add` holds a password).
#[derive(Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Print the OpenAPI document (YAML) and exit.
    Openapi,
    /// Send an event to a user through a running server's
    /// `POST /v1/api/notify` (with PUSHTOKEN_NOTIFY_KEY), and print its
    /// answer.
    Notify(NotifyArgs),
    /// Write the whole database to standard output as JSON Lines: users
    /// with their password hashes, sessions, push tokens, push-socket
    /// clients, events and the server secret (keep it as a secret).
    Export,
    /// Load an export from standard input into an empty database (SQLite or
    /// PostgreSQL), in one transaction: all of it or nothing.
    Import,
    /// Count users, live sessions, push tokens by family and platform,
    /// push-socket clients and events.
    Stats {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `pushtoken notify`.
#[derive(Args)]
pub struct NotifyArgs {
    /// The user: an id, or a username, email or phone.
    pub user: String,
    /// `ring` or `message`.
    #[arg(value_parser = ["ring", "message"])]
    pub family: String,
    /// The vendor's event type (`1` a doorbell call, `0` motion, …).
    #[arg(long = "type")]
    pub kind: String,
    /// The device's uid.
    #[arg(long)]
    pub uid: String,
    /// The event's message text.
    #[arg(long)]
    pub message: Option<String>,
    /// Seconds the event waits for a disconnected phone.
    #[arg(long)]
    pub ttl: Option<u32>,
    /// The server: `http://` or `https://` host and port (default: the
    /// PUSHTOKEN_LISTEN address, https when PUSHTOKEN_TLS_CERT is set;
    /// that certificate is trusted).
    #[arg(long)]
    pub server: Option<String>,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account and print its id.
    Add {
        username: String,
        /// The password (visible in the process list; prefer --password-stdin).
        #[arg(
            long,
            conflicts_with = "password_stdin",
            required_unless_present = "password_stdin"
        )]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Set a user's password; every session of the user is revoked.
    Passwd {
        /// The user's username, email or phone.
        username: String,
        /// The password (visible in the process list; prefer --password-stdin).
        #[arg(
            long,
            conflicts_with = "password_stdin",
            required_unless_present = "password_stdin"
        )]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke every session of a user (their phones must log in again).
    Revoke {
        /// The user's username, email or phone.
        username: String,
    },
    /// Delete a user with their sessions, push tokens and events.
    Delete {
        /// The user's username, email or phone.
        username: String,
    },
}

/// The raw settings, as given on the command line or in the environment.
/// (No `Debug`: it holds secrets; [`Config`]'s `Debug` redacts them.)
#[derive(Args)]
pub struct Settings {
    /// Database: a `sqlite:` URL (file and folder created if missing) or a
    /// `postgres://` URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "sqlite://data/pushtoken.db"
    )]
    pub database_url: String,
    /// Address and port to listen on.
    #[arg(
        long,
        env = "PUSHTOKEN_LISTEN",
        global = true,
        default_value = "127.0.0.1:6443"
    )]
    pub listen: String,
    /// Registration key that sign-up requires; unset disables sign-up.
    #[arg(long, env = "PUSHTOKEN_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// The operator's key for `POST /v1/api/notify` (sent as `Authorization:
    /// Bearer <key>`); unset: that route answers 403.
    #[arg(
        long,
        env = "PUSHTOKEN_NOTIFY_KEY",
        global = true,
        hide_env_values = true
    )]
    pub notify_key: Option<String>,
    /// How long recorded events are kept.
    #[arg(
        long,
        env = "PUSHTOKEN_EVENT_RETENTION",
        global = true,
        default_value = "30d"
    )]
    pub event_retention: String,
    /// Bundle id given to tokens registered without one.
    #[arg(
        long,
        env = "PUSHTOKEN_BUNDLE_ID",
        global = true,
        default_value = "com.lancens.wxdoorbell"
    )]
    pub bundle_id: String,
    /// Session lifetime: a number with s, m, h or d (seconds when bare).
    #[arg(
        long,
        env = "PUSHTOKEN_SESSION_TTL",
        global = true,
        default_value = "30d"
    )]
    pub session_ttl: String,
    /// Longest a password login lasts through refreshes, at least the
    /// session lifetime; then only a new login helps.
    #[arg(
        long,
        env = "PUSHTOKEN_SESSION_MAX_AGE",
        global = true,
        default_value = "365d"
    )]
    pub session_max_age: String,
    /// A push token not registered again (a PUT or POST of it, even one
    /// that changes nothing) for this long is removed by a background
    /// sweep, which runs every quarter of this, at most an hour apart.
    #[arg(
        long,
        env = "PUSHTOKEN_TOKEN_MAX_AGE",
        global = true,
        default_value = "270d"
    )]
    pub token_max_age: String,
    /// Log format: text or json (levels via RUST_LOG).
    #[arg(
        long,
        env = "PUSHTOKEN_LOG_FORMAT",
        global = true,
        default_value = "text"
    )]
    pub log_format: String,
    /// Largest request body accepted, in bytes.
    #[arg(
        long,
        env = "PUSHTOKEN_BODY_LIMIT",
        global = true,
        default_value = "16384"
    )]
    pub body_limit: String,
    /// Most database connections held at once.
    #[arg(
        long,
        env = "PUSHTOKEN_DB_MAX_CONNECTIONS",
        global = true,
        default_value = "8"
    )]
    pub db_max_connections: String,
    /// How long a request waits for a database connection before it answers
    /// 503 `10001`.
    #[arg(
        long,
        env = "PUSHTOKEN_DB_ACQUIRE_TIMEOUT",
        global = true,
        default_value = "5s"
    )]
    pub db_acquire_timeout: String,
    /// SQLite only: full (a commit is on disk before it is acknowledged, and
    /// survives a power loss) or normal (WAL synced at checkpoints: survives
    /// a crash of the process, may lose the last commits on a power loss).
    #[arg(
        long,
        env = "PUSHTOKEN_SQLITE_SYNCHRONOUS",
        global = true,
        default_value = "full"
    )]
    pub sqlite_synchronous: String,
    /// Sessions, and users' rows of a family, kept in memory (each; 0:
    /// nothing is kept, every request asks the database).
    #[arg(
        long,
        env = "PUSHTOKEN_CACHE_ENTRIES",
        global = true,
        default_value = "100000"
    )]
    pub cache_entries: String,
    /// How long after it was read a kept session or row list may still be
    /// served (1ms to 60s): the longest a change made by another instance,
    /// or by a `pushtoken` command, takes to be seen by this one. This
    /// instance's own changes are seen at once.
    #[arg(
        long,
        env = "PUSHTOKEN_CACHE_LIFETIME",
        global = true,
        default_value = "50ms"
    )]
    pub cache_lifetime: String,
    /// Failed logins for one account (username, email and phone together)
    /// within 15 minutes before its logins answer 429 until the window has
    /// passed (0: no limit).
    #[arg(
        long,
        env = "PUSHTOKEN_LOGIN_MAX_FAILURES",
        global = true,
        default_value = "10"
    )]
    pub login_max_failures: String,
    /// Logins, sign-ups and password changes waiting for a password hash at
    /// once; more answer 503 `server busy` at once.
    #[arg(
        long,
        env = "PUSHTOKEN_HASH_QUEUE",
        global = true,
        default_value = "32"
    )]
    pub hash_queue: String,
    /// Sign-up, login and refresh requests per minute from one client
    /// address, in bursts of up to 100 (0: no limit).
    #[arg(
        long,
        env = "PUSHTOKEN_AUTH_RATE_PER_MINUTE",
        global = true,
        default_value = "300"
    )]
    pub auth_rate_per_minute: String,
    /// Most requests handled at once; more are refused with 503.
    #[arg(
        long,
        env = "PUSHTOKEN_MAX_IN_FLIGHT",
        global = true,
        default_value = "1024"
    )]
    pub max_in_flight: String,
    /// Longest a request may take before it is answered 408.
    #[arg(
        long,
        env = "PUSHTOKEN_REQUEST_TIMEOUT",
        global = true,
        default_value = "30s"
    )]
    pub request_timeout: String,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "PUSHTOKEN_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "PUSHTOKEN_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Address and port of the push socket (TLS), or `off`.
    #[arg(
        long,
        env = "PUSHTOKEN_PUSH_LISTEN",
        global = true,
        default_value = "127.0.0.1:11001"
    )]
    pub push_listen: String,
    /// PEM certificate chain of the push socket (with --push-tls-key); else
    /// the HTTPS pair, else a self-signed certificate made at startup.
    #[arg(long, env = "PUSHTOKEN_PUSH_TLS_CERT", global = true)]
    pub push_tls_cert: Option<PathBuf>,
    /// PEM private key of the push socket's certificate.
    #[arg(long, env = "PUSHTOKEN_PUSH_TLS_KEY", global = true)]
    pub push_tls_key: Option<PathBuf>,
    /// How often the push socket sends its heartbeat; a connection silent
    /// for three of these is closed.
    #[arg(
        long,
        env = "PUSHTOKEN_PUSH_HEARTBEAT",
        global = true,
        default_value = "60s"
    )]
    pub push_heartbeat: String,
    /// How long startup waits for the database server to become reachable.
    #[arg(
        long,
        env = "PUSHTOKEN_DB_STARTUP_TIMEOUT",
        global = true,
        default_value = "60s"
    )]
    pub db_startup_timeout: String,
    /// Reverse proxies whose `X-Forwarded-For` names the client: CIDRs (or
    /// addresses) separated by commas. Unset: the connection's address is
    /// the client's, whatever the header says.
    #[arg(long, env = "PUSHTOKEN_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
    /// Address and port to serve `/metrics` on, instead of on the API's
    /// address. Unset: `/metrics` is an API route.
    #[arg(long, env = "PUSHTOKEN_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<String>,
    /// How often the metrics that count stored rows (push tokens, active
    /// sessions) are counted again; a scrape only reads the last counts.
    #[arg(
        long,
        env = "PUSHTOKEN_METRICS_REFRESH",
        global = true,
        default_value = "15s"
    )]
    pub metrics_refresh: String,
    /// PEM file of CAs to trust, beside the public roots, for every push
    /// provider and token endpoint (stand-ins, air-gapped sites).
    #[arg(long, env = "PUSHTOKEN_PROVIDER_CA_FILE", global = true)]
    pub provider_ca_file: Option<PathBuf>,
    /// Xiaomi MiPush app secret; unset: rows for Xiaomi are skipped.
    #[arg(
        long,
        env = "PUSHTOKEN_XIAOMI_APP_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub xiaomi_app_secret: Option<String>,
    /// Xiaomi MiPush base URL (`scheme://host[:port]`).
    #[arg(
        long,
        env = "PUSHTOKEN_XIAOMI_URL",
        global = true,
        default_value = "https://api.xmpush.xiaomi.com"
    )]
    pub xiaomi_url: String,
    /// FCM: a service-account JSON file (its `project_id`, key and
    /// `token_uri` are used); unset: rows for FCM are skipped.
    #[arg(long, env = "PUSHTOKEN_FCM_CREDENTIALS", global = true)]
    pub fcm_credentials: Option<PathBuf>,
    /// FCM's base URL (`scheme://host[:port]`).
    #[arg(
        long,
        env = "PUSHTOKEN_FCM_URL",
        global = true,
        default_value = "https://fcm.googleapis.com"
    )]
    pub fcm_url: String,
    /// Huawei Push Kit: the app id (with its secret); unset: rows for
    /// Huawei are skipped.
    #[arg(long, env = "PUSHTOKEN_HUAWEI_APP_ID", global = true)]
    pub huawei_app_id: Option<String>,
    /// Huawei Push Kit: the app secret (with the app id).
    #[arg(
        long,
        env = "PUSHTOKEN_HUAWEI_APP_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub huawei_app_secret: Option<String>,
    /// Push Kit's base URL (`scheme://host[:port]`).
    #[arg(
        long,
        env = "PUSHTOKEN_HUAWEI_URL",
        global = true,
        default_value = "https://push-api.cloud.huawei.com"
    )]
    pub huawei_url: String,
    /// Push Kit's OAuth token URL (a full URL).
    #[arg(
        long,
        env = "PUSHTOKEN_HUAWEI_TOKEN_URL",
        global = true,
        default_value = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    )]
    pub huawei_token_url: String,
    /// APNs: the team's .p8 key file (with its key id and team id); unset:
    /// rows for APNs are skipped.
    #[arg(long, env = "PUSHTOKEN_APNS_KEY_FILE", global = true)]
    pub apns_key_file: Option<PathBuf>,
    /// APNs: the .p8 key's id.
    #[arg(long, env = "PUSHTOKEN_APNS_KEY_ID", global = true)]
    pub apns_key_id: Option<String>,
    /// APNs: the team id.
    #[arg(long, env = "PUSHTOKEN_APNS_TEAM_ID", global = true)]
    pub apns_team_id: Option<String>,
    /// APNs' base URL for `dev` 0 (production); unset:
    /// https://api.push.apple.com.
    #[arg(long, env = "PUSHTOKEN_APNS_URL", global = true)]
    pub apns_url: Option<String>,
    /// APNs' base URL for `dev` 1 (sandbox); unset: PUSHTOKEN_APNS_URL when
    /// that is set, else https://api.sandbox.push.apple.com.
    #[arg(long, env = "PUSHTOKEN_APNS_SANDBOX_URL", global = true)]
    pub apns_sandbox_url: Option<String>,
}

/// APNs, configured.
#[derive(Clone)]
pub struct ApnsSettings {
    pub url: String,
    pub sandbox_url: String,
    pub key: crate::providers::apns::ApnsKey,
}

/// Huawei Push Kit, configured.
#[derive(Clone)]
pub struct HuaweiSettings {
    pub url: String,
    pub token_url: String,
    pub app_id: String,
    pub secret: String,
}

/// FCM, configured.
#[derive(Clone)]
pub struct FcmSettings {
    pub url: String,
    pub account: crate::providers::fcm::ServiceAccount,
}

/// Xiaomi MiPush, configured.
#[derive(Clone)]
pub struct XiaomiSettings {
    pub url: String,
    pub secret: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Checked settings.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub api_key: Option<String>,
    /// The key of `POST /v1/api/notify`; `None`: that route answers 403.
    pub notify_key: Option<String>,
    /// How long recorded events are kept.
    pub event_retention: Duration,
    pub bundle_id: String,
    pub session_ttl: Duration,
    /// How long a password login lasts through refreshes.
    pub session_max_age: Duration,
    /// How long a push token lives without being registered again.
    pub token_max_age: Duration,
    pub log_format: LogFormat,
    pub body_limit: usize,
    pub pool: PoolOptions,
    pub cache: CacheOptions,
    pub login_max_failures: u32,
    /// Password hashes waiting or running at once.
    pub hash_queue: usize,
    pub auth_rate_per_minute: u32,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    /// HTTPS certificate chain and key (PEM files); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where the push socket listens; `None`: off.
    pub push_listen: Option<SocketAddr>,
    /// The push socket's own certificate chain and key; both or neither.
    pub push_tls_cert: Option<PathBuf>,
    pub push_tls_key: Option<PathBuf>,
    pub push_heartbeat: Duration,
    /// Peers whose `X-Forwarded-For` is believed; empty: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Where `/metrics` is served instead of on the API; `None`: on the API.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the row-counting metrics are refreshed.
    pub metrics_refresh: Duration,
    /// CAs trusted for the push providers beside the public roots.
    pub provider_ca_file: Option<PathBuf>,
    /// `None`: rows for Xiaomi are skipped.
    pub xiaomi: Option<XiaomiSettings>,
    /// `None`: rows for FCM are skipped.
    pub fcm: Option<FcmSettings>,
    /// `None`: rows for Huawei are skipped.
    pub huawei: Option<HuaweiSettings>,
    /// `None`: rows for APNs are skipped.
    pub apns: Option<ApnsSettings>,
    /// Argon2 cost of new password hashes (memory KiB, iterations, lanes).
    pub password_cost: argon2::Params,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field(
                "notify_key",
                &self.notify_key.as_ref().map(|_| "[redacted]"),
            )
            .field("event_retention", &self.event_retention)
            .field("bundle_id", &self.bundle_id)
            .field("session_ttl", &self.session_ttl)
            .field("session_max_age", &self.session_max_age)
            .field("token_max_age", &self.token_max_age)
            .field("log_format", &self.log_format)
            .field("body_limit", &self.body_limit)
            .field("pool", &self.pool)
            .field("cache", &self.cache)
            .field("login_max_failures", &self.login_max_failures)
            .field("hash_queue", &self.hash_queue)
            .field("auth_rate_per_minute", &self.auth_rate_per_minute)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("push_listen", &self.push_listen)
            .field("push_tls_cert", &self.push_tls_cert)
            .field("push_tls_key", &self.push_tls_key)
            .field("push_heartbeat", &self.push_heartbeat)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("metrics_listen", &self.metrics_listen)
            .field("metrics_refresh", &self.metrics_refresh)
            .field("provider_ca_file", &self.provider_ca_file)
            .field("xiaomi_url", &self.xiaomi.as_ref().map(|x| &x.url))
            .field(
                "fcm_project",
                &self.fcm.as_ref().map(|f| &f.account.project_id),
            )
            .field("huawei_app_id", &self.huawei.as_ref().map(|h| &h.app_id))
            .field("apns_team_id", &self.apns.as_ref().map(|a| &a.key.team_id))
            .finish_non_exhaustive()
    }
}

/// Settings that hold secrets; each may instead be given as a file named by
/// `<NAME>_FILE` (Docker and Kubernetes secrets).
pub const SECRET_SETTINGS: [&str; 5] = [
    "PUSHTOKEN_API_KEY",
    "PUSHTOKEN_NOTIFY_KEY",
    "DATABASE_URL",
    "PUSHTOKEN_XIAOMI_APP_SECRET",
    "PUSHTOKEN_HUAWEI_APP_SECRET",
];

/// Reads each `<NAME>_FILE` of [`SECRET_SETTINGS`] into `<NAME>` (its
/// trailing newline dropped). Call before parsing the command line, while
/// the process has one thread. Both forms at once, or an unreadable file,
/// is an error naming the variable.
pub fn load_secret_files() -> Result<(), String> {
    for name in SECRET_SETTINGS {
        let file_var = format!("{name}_FILE");
        let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) else {
            continue;
        };
        if std::env::var_os(name).is_some_and(|v| !v.is_empty()) {
            return Err(format!(
                "invalid {file_var}: {name} is set too; give one of them"
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "invalid {file_var}: cannot read {}: {e}",
                std::path::Path::new(&path).display()
            )
        })?;
        std::env::set_var(name, text.trim_end_matches(['\r', '\n']));
    }
    Ok(())
}

/// A URL with any password replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:[redacted]{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Config {
    /// Checks every setting; the error is one line naming the setting.
    pub fn from_settings(s: &Settings) -> Result<Self, String> {
        fn bad(var: &str, flag: &str, why: impl fmt::Display) -> String {
            format!("invalid {var} (--{flag}): {why}")
        }
        let url = s.database_url.trim();
        if Backend::of_url(url).is_none() {
            return Err(bad(
                "DATABASE_URL",
                "database-url",
                "expected a sqlite: or postgres:// URL",
            ));
        }
        let listen = s.listen.trim().parse().map_err(|_| {
            bad(
                "PUSHTOKEN_LISTEN",
                "listen",
                format!("{:?} is not an address like 127.0.0.1:6443", s.listen),
            )
        })?;
        let key = |key: &Option<String>| match key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(key) => Some(key.to_owned()),
        };
        let (api_key, notify_key) = (key(&s.api_key), key(&s.notify_key));
        for (key, var, flag) in [
            (&api_key, "PUSHTOKEN_API_KEY", "api-key"),
            (&notify_key, "PUSHTOKEN_NOTIFY_KEY", "notify-key"),
        ] {
            if key
                .as_ref()
                .is_some_and(|k| k.chars().count() < MIN_KEY_LENGTH)
            {
                return Err(bad(
                    var,
                    flag,
                    format!(
                        "shorter than {MIN_KEY_LENGTH} characters; use a long random key \
                         (e.g. openssl rand -hex 16)"
                    ),
                ));
            }
        }
        let event_retention = parse_duration(&s.event_retention).ok_or_else(|| {
            bad(
                "PUSHTOKEN_EVENT_RETENTION",
                "event-retention",
                format!("{:?} is not a duration like 30d or 12h", s.event_retention),
            )
        })?;
        if !is_bundle_id(&s.bundle_id) {
            return Err(bad(
                "PUSHTOKEN_BUNDLE_ID",
                "bundle-id",
                format!(
                    "{:?} is not 1-155 characters of A-Z a-z 0-9 . _ -",
                    s.bundle_id
                ),
            ));
        }
        let session_ttl = parse_duration(&s.session_ttl).ok_or_else(|| {
            bad(
                "PUSHTOKEN_SESSION_TTL",
                "session-ttl",
                format!(
                    "{:?} is not a duration like 30d, 12h, 90m or 3600s",
                    s.session_ttl
                ),
            )
        })?;
        let session_max_age = parse_duration(&s.session_max_age).ok_or_else(|| {
            bad(
                "PUSHTOKEN_SESSION_MAX_AGE",
                "session-max-age",
                format!("{:?} is not a duration like 365d or 90d", s.session_max_age),
            )
        })?;
        if session_max_age < session_ttl {
            return Err(bad(
                "PUSHTOKEN_SESSION_MAX_AGE",
                "session-max-age",
                "must be at least the session lifetime (PUSHTOKEN_SESSION_TTL)",
            ));
        }
        let token_max_age = parse_duration(&s.token_max_age).ok_or_else(|| {
            bad(
                "PUSHTOKEN_TOKEN_MAX_AGE",
                "token-max-age",
                format!(
                    "{:?} is not a duration like 270d or 90d (at least 1s)",
                    s.token_max_age
                ),
            )
        })?;
        let log_format = match s.log_format.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "PUSHTOKEN_LOG_FORMAT",
                    "log-format",
                    format!("{other:?} is neither text nor json"),
                ))
            }
        };
        let body_limit = s
            .body_limit
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1024..=16 * 1024 * 1024).contains(n))
            .ok_or_else(|| {
                bad(
                    "PUSHTOKEN_BODY_LIMIT",
                    "body-limit",
                    format!(
                        "{:?} is not a byte count from 1024 to 16777216",
                        s.body_limit
                    ),
                )
            })?;
        let db_max_connections = s
            .db_max_connections
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                bad(
                    "PUSHTOKEN_DB_MAX_CONNECTIONS",
                    "db-max-connections",
                    format!("{:?} is not a number from 1 to 1000", s.db_max_connections),
                )
            })?;
        let timeout = |text: &str, var: &str, flag: &str| {
            parse_duration(text).ok_or_else(|| {
                bad(
                    var,
                    flag,
                    format!("{text:?} is not a duration like 5s or 2m"),
                )
            })
        };
        let sqlite_full_sync = match s.sqlite_synchronous.trim().to_ascii_lowercase().as_str() {
            "full" => true,
            "normal" => false,
            other => {
                return Err(bad(
                    "PUSHTOKEN_SQLITE_SYNCHRONOUS",
                    "sqlite-synchronous",
                    format!("{other:?} is neither full nor normal"),
                ))
            }
        };
        let pool = PoolOptions {
            max_connections: db_max_connections,
            sqlite_full_sync,
            acquire_timeout: timeout(
                &s.db_acquire_timeout,
                "PUSHTOKEN_DB_ACQUIRE_TIMEOUT",
                "db-acquire-timeout",
            )?,
            startup_timeout: timeout(
                &s.db_startup_timeout,
                "PUSHTOKEN_DB_STARTUP_TIMEOUT",
                "db-startup-timeout",
            )?,
        };
        let cache = CacheOptions {
            entries: s
                .cache_entries
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 100_000_000)
                .ok_or_else(|| {
                    bad(
                        "PUSHTOKEN_CACHE_ENTRIES",
                        "cache-entries",
                        format!("{:?} is not a number from 0 to 100000000", s.cache_entries),
                    )
                })?,
            lifetime: parse_millis(&s.cache_lifetime)
                .filter(|d| (Duration::from_millis(1)..=Duration::from_secs(60)).contains(d))
                .ok_or_else(|| {
                    bad(
                        "PUSHTOKEN_CACHE_LIFETIME",
                        "cache-lifetime",
                        format!(
                            "{:?} is not a duration from 1ms to 60s, like 50ms or 2s",
                            s.cache_lifetime
                        ),
                    )
                })?,
        };
        let count = |text: &str, var: &str, flag: &str, max: u32| {
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    bad(
                        var,
                        flag,
                        format!("{text:?} is not a number from 0 to {max}"),
                    )
                })
        };
        let login_max_failures = count(
            &s.login_max_failures,
            "PUSHTOKEN_LOGIN_MAX_FAILURES",
            "login-max-failures",
            1_000_000,
        )?;
        let hash_queue = count(
            &s.hash_queue,
            "PUSHTOKEN_HASH_QUEUE",
            "hash-queue",
            1_000_000,
        )?;
        if hash_queue == 0 {
            return Err(bad(
                "PUSHTOKEN_HASH_QUEUE",
                "hash-queue",
                "must be at least 1",
            ));
        }
        let auth_rate_per_minute = count(
            &s.auth_rate_per_minute,
            "PUSHTOKEN_AUTH_RATE_PER_MINUTE",
            "auth-rate-per-minute",
            1_000_000_000,
        )?;
        let max_in_flight = count(
            &s.max_in_flight,
            "PUSHTOKEN_MAX_IN_FLIGHT",
            "max-in-flight",
            1_000_000,
        )?;
        if max_in_flight == 0 {
            return Err(bad(
                "PUSHTOKEN_MAX_IN_FLIGHT",
                "max-in-flight",
                "must be at least 1",
            ));
        }
        let request_timeout = timeout(
            &s.request_timeout,
            "PUSHTOKEN_REQUEST_TIMEOUT",
            "request-timeout",
        )?;
        let (tls_cert, tls_key) = pem_pair(&s.tls_cert, &s.tls_key, "")?;
        let (push_tls_cert, push_tls_key) = pem_pair(&s.push_tls_cert, &s.push_tls_key, "PUSH_")?;
        let push_listen = match s.push_listen.trim() {
            "off" => None,
            text => Some(text.parse().map_err(|_| {
                bad(
                    "PUSHTOKEN_PUSH_LISTEN",
                    "push-listen",
                    format!("{text:?} is not an address like 127.0.0.1:11001, nor off"),
                )
            })?),
        };
        let push_heartbeat = parse_duration(&s.push_heartbeat).ok_or_else(|| {
            bad(
                "PUSHTOKEN_PUSH_HEARTBEAT",
                "push-heartbeat",
                format!("{:?} is not a duration like 60s or 2m", s.push_heartbeat),
            )
        })?;
        let trusted_proxies = match s.trusted_proxies.as_deref() {
            None => Vec::new(),
            Some(text) => parse_networks(text).map_err(|item| {
                bad(
                    "PUSHTOKEN_TRUSTED_PROXIES",
                    "trusted-proxies",
                    format!("{item:?} is not a CIDR like 10.0.0.0/8 or fd00::/8, nor an address"),
                )
            })?,
        };
        let metrics_listen = match s.metrics_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| {
                bad(
                    "PUSHTOKEN_METRICS_LISTEN",
                    "metrics-listen",
                    format!("{text:?} is not an address like 127.0.0.1:9464"),
                )
            })?),
        };
        let metrics_refresh = parse_duration(&s.metrics_refresh).ok_or_else(|| {
            bad(
                "PUSHTOKEN_METRICS_REFRESH",
                "metrics-refresh",
                format!("{:?} is not a duration like 15s or 1m", s.metrics_refresh),
            )
        })?;
        let provider_ca_file = match &s.provider_ca_file {
            None => None,
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => {
                crate::providers::http_client(Some(path)).map_err(|e| {
                    bad(
                        "PUSHTOKEN_PROVIDER_CA_FILE",
                        "provider-ca-file",
                        format!("{e:#}"),
                    )
                })?;
                Some(path.clone())
            }
        };
        let xiaomi_url = base_url(&s.xiaomi_url, "PUSHTOKEN_XIAOMI_URL", "xiaomi-url")?;
        let xiaomi = key(&s.xiaomi_app_secret).map(|secret| XiaomiSettings {
            url: xiaomi_url,
            secret,
        });
        let fcm_url = base_url(&s.fcm_url, "PUSHTOKEN_FCM_URL", "fcm-url")?;
        let fcm = match &s.fcm_credentials {
            None => None,
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(FcmSettings {
                url: fcm_url,
                account: crate::providers::fcm::ServiceAccount::read(path).map_err(|e| {
                    bad(
                        "PUSHTOKEN_FCM_CREDENTIALS",
                        "fcm-credentials",
                        format!("{e:#}"),
                    )
                })?,
            }),
        };
        let huawei_url = base_url(&s.huawei_url, "PUSHTOKEN_HUAWEI_URL", "huawei-url")?;
        let huawei_token_url = s.huawei_token_url.trim().to_owned();
        if !reqwest::Url::parse(&huawei_token_url)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        {
            return Err(bad(
                "PUSHTOKEN_HUAWEI_TOKEN_URL",
                "huawei-token-url",
                format!("{huawei_token_url:?} is not an http(s) URL"),
            ));
        }
        let huawei = match (key(&s.huawei_app_id), key(&s.huawei_app_secret)) {
            (None, None) => None,
            (Some(app_id), Some(secret)) => Some(HuaweiSettings {
                url: huawei_url,
                token_url: huawei_token_url,
                app_id,
                secret,
            }),
            (Some(_), None) => {
                return Err(bad(
                    "PUSHTOKEN_HUAWEI_APP_SECRET",
                    "huawei-app-secret",
                    "PUSHTOKEN_HUAWEI_APP_ID is set without it",
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "PUSHTOKEN_HUAWEI_APP_ID",
                    "huawei-app-id",
                    "PUSHTOKEN_HUAWEI_APP_SECRET is set without it",
                ))
            }
        };
        let apns_url = match key(&s.apns_url) {
            Some(url) => Some(base_url(&url, "PUSHTOKEN_APNS_URL", "apns-url")?),
            None => None,
        };
        let apns_sandbox_url = match key(&s.apns_sandbox_url) {
            Some(url) => Some(base_url(
                &url,
                "PUSHTOKEN_APNS_SANDBOX_URL",
                "apns-sandbox-url",
            )?),
            None => None,
        };
        let apns_file = s
            .apns_key_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let apns = match (apns_file, key(&s.apns_key_id), key(&s.apns_team_id)) {
            (None, None, None) => None,
            (Some(file), Some(key_id), Some(team_id)) => {
                let key =
                    crate::providers::apns::ApnsKey::read(&file, key_id, team_id).map_err(|e| {
                        bad("PUSHTOKEN_APNS_KEY_FILE", "apns-key-file", format!("{e:#}"))
                    })?;
                let url = apns_url
                    .clone()
                    .unwrap_or_else(|| "https://api.push.apple.com".to_owned());
                let sandbox_url = apns_sandbox_url
                    .or(apns_url)
                    .unwrap_or_else(|| "https://api.sandbox.push.apple.com".to_owned());
                Some(ApnsSettings {
                    url,
                    sandbox_url,
                    key,
                })
            }
            (file, key_id, team_id) => {
                let missing: Vec<&str> = [
                    ("PUSHTOKEN_APNS_KEY_FILE", file.is_none()),
                    ("PUSHTOKEN_APNS_KEY_ID", key_id.is_none()),
                    ("PUSHTOKEN_APNS_TEAM_ID", team_id.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, missing)| missing.then_some(name))
                .collect();
                return Err(bad(
                    missing[0],
                    &missing[0]["PUSHTOKEN_".len()..]
                        .to_ascii_lowercase()
                        .replace('_', "-"),
                    format!(
                        "APNs needs all three of its key file, key id and team id; {} missing",
                        missing.join(" and ")
                    ),
                ));
            }
        };
        Ok(Config {
            database_url: url.to_owned(),
            listen,
            api_key,
            notify_key,
            event_retention,
            bundle_id: s.bundle_id.clone(),
            session_ttl,
            session_max_age,
            token_max_age,
            log_format,
            body_limit,
            pool,
            cache,
            login_max_failures,
            hash_queue: hash_queue as usize,
            auth_rate_per_minute,
            max_in_flight: max_in_flight as usize,
            request_timeout,
            tls_cert,
            tls_key,
            push_listen,
            push_tls_cert,
            push_tls_key,
            push_heartbeat,
            trusted_proxies,
            metrics_listen,
            metrics_refresh,
            provider_ca_file,
            xiaomi,
            fcm,
            huawei,
            apns,
            password_cost: argon2::Params::default(),
            shutdown_grace: Duration::from_secs(30),
        })
    }
}

/// A provider's base URL: `http` or `https`, a host, an optional port, no
/// path, query or fragment (the server appends the provider's own path).
fn base_url(text: &str, var: &str, flag: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    let fine = reqwest::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some_and(|host| !host.is_empty())
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
    });
    if fine {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid {var} (--{flag}): {text:?} is not a base URL like https://host[:port] (no path)"
        ))
    }
}

/// The fewest characters a registration or notify key may have: a short
/// key could be guessed, or read off the time a comparison takes.
pub const MIN_KEY_LENGTH: usize = 16;

/// Networks separated by commas, each a CIDR (`10.0.0.0/8`) or an address
/// (a network of that address alone); the item that is neither is the error.
fn parse_networks(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|net| canonical_network(net.trunc()))
                .map_err(|_| item.to_owned())
        })
        .collect()
}

/// `net`, with an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the
/// IPv4 network it maps (`10.0.0.0/8`), since client addresses are compared
/// in that form.
fn canonical_network(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// A certificate and key setting pair (`PUSHTOKEN_{infix}TLS_CERT` and
/// `…_KEY`): both or neither; an empty value is unset.
fn pem_pair(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    infix: &str,
) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
    let set = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let (cert, key) = (set(cert), set(key));
    let flag = infix.to_ascii_lowercase().replace('_', "-");
    match (&cert, &key) {
        (Some(_), None) => Err(format!(
            "invalid PUSHTOKEN_{infix}TLS_KEY (--{flag}tls-key): PUSHTOKEN_{infix}TLS_CERT is set but no key"
        )),
        (None, Some(_)) => Err(format!(
            "invalid PUSHTOKEN_{infix}TLS_CERT (--{flag}tls-cert): PUSHTOKEN_{infix}TLS_KEY is set but no certificate"
        )),
        _ => Ok((cert, key)),
    }
}

/// A short duration: whole milliseconds (`50ms`) or seconds (`2s`).
pub fn parse_millis(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (digits, unit) = match text.strip_suffix("ms") {
        Some(digits) => (digits, 1),
        None => (text.strip_suffix('s')?, 1000),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = digits.parse::<u64>().ok()?.checked_mul(unit)?;
    Some(Duration::from_millis(millis))
}

/// `30d`, `12h`, `90m`, `3600s` or `3600` (seconds); zero is refused.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let secs = number.checked_mul(scale)?;
    // Expiry times are stored as i64 unix seconds: keep far from overflow.
    (secs > 0 && secs <= 100 * 365 * 86_400).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3600s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3600"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn short_durations_take_milliseconds_or_seconds_and_nothing_else() {
        assert_eq!(parse_millis("50ms"), Some(Duration::from_millis(50)));
        assert_eq!(parse_millis(" 2s "), Some(Duration::from_secs(2)));
        assert_eq!(parse_millis("0ms"), Some(Duration::ZERO));
        for text in [
            "",
            "ms",
            "s",
            "50",
            "1.5s",
            "-1ms",
            "5m",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_millis(text), None, "{text}");
        }
    }

    #[test]
    fn durations_refuse_zero_garbage_and_overflow() {
        for text in [
            "0",
            "0d",
            "",
            "d",
            "1w",
            "-5m",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn the_session_max_age_is_at_least_the_session_ttl() {
        let config = config_of(&["--session-ttl", "7d", "--session-max-age", "7d"]).unwrap();
        assert_eq!(config.session_max_age, Duration::from_secs(7 * 86_400));
        let error = config_of(&["--session-ttl", "7d", "--session-max-age", "6d"]).unwrap_err();
        assert!(error.contains("PUSHTOKEN_SESSION_MAX_AGE"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let default = config_of(&[]).unwrap();
        assert_eq!(default.session_max_age, Duration::from_secs(365 * 86_400));
        assert_eq!(default.hash_queue, 32);
        assert!(config_of(&["--hash-queue", "0"]).is_err());
    }

    #[test]
    fn the_token_max_age_is_a_positive_duration_of_270_days_by_default() {
        let default = config_of(&[]).unwrap();
        assert_eq!(default.token_max_age, Duration::from_secs(270 * 86_400));
        let set = config_of(&["--token-max-age", "90d"]).unwrap();
        assert_eq!(set.token_max_age, Duration::from_secs(90 * 86_400));
        assert_eq!(
            config_of(&["--token-max-age", "4s"]).unwrap().token_max_age,
            Duration::from_secs(4)
        );
        for bad in ["0", "0d", "-1d", "1w", "soon", ""] {
            let reason = config_of(&[&format!("--token-max-age={bad}")]).unwrap_err();
            assert!(
                reason.starts_with("invalid PUSHTOKEN_TOKEN_MAX_AGE (--token-max-age): "),
                "{reason}"
            );
            assert!(!reason.contains('\n'), "{reason}");
        }
    }

    #[test]
    fn config_debug_redacts_the_api_key_and_database_password() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "pushtoken",
            "--api-key",
            "registration-secret",
            "--database-url",
            "postgres://app:db-secret@db:5432/pushtoken",
        ])
        .unwrap();
        let shown = format!("{:?}", Config::from_settings(&cli.settings).unwrap());
        assert!(!shown.contains("registration-secret"), "{shown}");
        assert!(!shown.contains("db-secret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    /// Each setting's environment variable, flag and default, as clap
    /// knows them.
    fn settings() -> Vec<(String, String, Option<String>)> {
        use clap::CommandFactory;
        Cli::command()
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_str()?.to_owned();
                let flag = format!("--{}", arg.get_long()?);
                let default = arg
                    .get_default_values()
                    .first()
                    .map(|v| v.to_string_lossy().into_owned());
                Some((env, flag, default))
            })
            .collect()
    }

    /// The texts in backquotes of a Markdown table cell.
    fn quoted(cell: &str) -> Vec<&str> {
        cell.split('`').skip(1).step_by(2).collect()
    }

    fn read(file: &str) -> String {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn env_example_lists_every_setting_with_its_default() {
        let listed: std::collections::BTreeMap<String, String> = read(".env.example")
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .filter(|(name, _)| name != "RUST_LOG")
            .collect();
        let settings = settings();
        for (env, _, default) in &settings {
            assert_eq!(
                listed.get(env),
                Some(&default.clone().unwrap_or_default()),
                "{env} in .env.example, with its default"
            );
        }
        for name in listed.keys() {
            assert!(
                settings.iter().any(|(env, ..)| env == name),
                ".env.example lists {name}, which is no setting"
            );
        }
    }

    #[test]
    fn readme_settings_table_names_every_setting_with_its_flag() {
        let readme = read("README.md");
        let table = readme
            .split("| variable | flag | default |")
            .nth(1)
            .expect("README.md has the settings table");
        // (variables, flags) of each row, in backquotes.
        let rows: Vec<(Vec<&str>, Vec<&str>)> = table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').collect();
                (quoted(cells[1]), quoted(cells[2]))
            })
            .collect();
        let settings = settings();
        for (env, flag, _) in &settings {
            let row = rows.iter().find(|(envs, _)| envs.contains(&env.as_str()));
            let Some((_, flags)) = row else {
                panic!("README.md's settings table lacks {env}");
            };
            assert!(
                flags.contains(&flag.as_str()),
                "README.md gives {env} the flags {flags:?}, not {flag}"
            );
        }
        for (envs, _) in &rows {
            for env in envs {
                assert!(
                    settings.iter().any(|(name, ..)| name == env),
                    "README.md's settings table names {env}, which is no setting"
                );
            }
        }
    }

    #[test]
    fn push_socket_settings_are_checked() {
        use clap::Parser;
        let config = |args: &[&str]| {
            let mut all = vec!["pushtoken"];
            all.extend_from_slice(args);
            Config::from_settings(&Cli::try_parse_from(all).unwrap().settings)
        };
        let defaults = config(&[]).unwrap();
        assert_eq!(
            defaults.push_listen,
            Some("127.0.0.1:11001".parse().unwrap())
        );
        assert_eq!(defaults.push_heartbeat, Duration::from_secs(60));
        assert_eq!(config(&["--push-listen", "off"]).unwrap().push_listen, None);
        for (args, named) in [
            (&["--push-listen", "11001"][..], "PUSHTOKEN_PUSH_LISTEN"),
            (&["--push-heartbeat", "0s"], "PUSHTOKEN_PUSH_HEARTBEAT"),
            (&["--push-tls-cert", "c.pem"], "PUSHTOKEN_PUSH_TLS_KEY"),
            (&["--push-tls-key", "k.pem"], "PUSHTOKEN_PUSH_TLS_CERT"),
            (&["--tls-cert", "c.pem"], "PUSHTOKEN_TLS_KEY"),
        ] {
            let reason = config(args).unwrap_err();
            assert!(reason.starts_with(&format!("invalid {named} ")), "{reason}");
            assert!(!reason.contains('\n'), "{reason}");
        }
    }

    fn config_of(args: &[&str]) -> Result<Config, String> {
        use clap::Parser;
        let mut all = vec!["pushtoken"];
        all.extend_from_slice(args);
        Config::from_settings(&Cli::try_parse_from(all).unwrap().settings)
    }

    #[test]
    fn keys_shorter_than_16_characters_stop_startup_without_showing_the_key() {
        for (flag, named) in [
            ("--api-key", "PUSHTOKEN_API_KEY"),
            ("--notify-key", "PUSHTOKEN_NOTIFY_KEY"),
        ] {
            let reason = config_of(&[flag, "fifteen-chars!!"]).unwrap_err();
            assert!(reason.starts_with(&format!("invalid {named} ")), "{reason}");
            assert!(!reason.contains("fifteen-chars"), "{reason}");
            assert!(!reason.contains('\n'), "{reason}");
            // 16 characters (not bytes) is enough; empty is unset.
            assert!(config_of(&[flag, "sixteen-chars!!!"]).is_ok());
            assert!(config_of(&[flag, "ключ-регистрации"]).is_ok());
            assert!(config_of(&[flag, ""]).is_ok());
        }
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        assert!(config_of(&[]).unwrap().trusted_proxies.is_empty());
        let config = config_of(&[
            "--trusted-proxies",
            " 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::ffff:172.16.0.0/108,",
        ])
        .unwrap();
        let shown: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            shown,
            ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "172.16.0.0/12"]
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/8,proxy.local",
            "10.0.0.0/8;10.1.0.0/16",
            "fd00::/129",
        ] {
            let reason = config_of(&["--trusted-proxies", bad]).unwrap_err();
            assert!(
                reason.starts_with("invalid PUSHTOKEN_TRUSTED_PROXIES (--trusted-proxies): "),
                "{reason}"
            );
            assert!(!reason.contains('\n'), "{reason}");
        }
    }

    #[test]
    fn metrics_settings_are_checked() {
        let defaults = config_of(&[]).unwrap();
        assert_eq!(defaults.metrics_listen, None);
        assert_eq!(defaults.metrics_refresh, Duration::from_secs(15));
        let set = config_of(&["--metrics-listen", "127.0.0.1:9464"]).unwrap();
        assert_eq!(set.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        for (args, named) in [
            (
                &["--metrics-listen", "9464"][..],
                "PUSHTOKEN_METRICS_LISTEN",
            ),
            (&["--metrics-refresh", "0s"], "PUSHTOKEN_METRICS_REFRESH"),
        ] {
            let reason = config_of(args).unwrap_err();
            assert!(reason.starts_with(&format!("invalid {named} ")), "{reason}");
        }
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:[redacted]@h/db"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
