//! The test harness: a `TestApp` per test, with a database of its own, driven
//! in-process through the router.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use pushtoken::config::{Cli, Config};
use pushtoken::AppState;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt;

pub const API_KEY: &str = "test-registration-key";
pub const PASSWORD: &str = "password_1";
pub const RING: &str = "/v1/api/user/token";
pub const MESSAGE: &str = "/v1/api/user/message/token";
pub const FAMILIES: [&str; 2] = [RING, MESSAGE];

/// Runs each named scenario `async fn name(app: TestApp)` as a test on every
/// backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::TestApp::sqlite().await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::TestApp::postgres().await).await;
                }
            )+
        }
    };
}

/// The PostgreSQL server the tests use: `TEST_DATABASE_URL`, else the local
/// server at 127.0.0.1:5432. Each test makes a database of its own there.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs each named scenario `async fn name(database_url: &str)` (for tests
/// of the real binary) on a fresh SQLite file and on a fresh PostgreSQL
/// database.
#[macro_export]
macro_rules! on_every_database {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite();
                    super::$name(&db.url()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::postgres().await;
                    super::$name(&db.url()).await;
                }
            )+
        }
    };
}

/// Where a test's database lives; removed when the test ends.
pub enum TestDb {
    Sqlite { dir: TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn sqlite() -> Self {
        TestDb::Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new, empty PostgreSQL database; panics loudly when the server
    /// cannot be reached, so a missing server never skips tests.
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let name = format!("pushtoken_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at TEST_DATABASE_URL={admin_url} is not reachable: {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        TestDb::Postgres { admin_url, name }
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite { dir } => {
                format!("sqlite://{}", dir.path().join("db/pushtoken.db").display())
            }
            TestDb::Postgres { admin_url, name } => database_url(admin_url, name),
        }
    }

    pub fn sqlite_dir(&self) -> Option<PathBuf> {
        match self {
            TestDb::Sqlite { dir } => Some(dir.path().to_path_buf()),
            TestDb::Postgres { .. } => None,
        }
    }
}

/// `admin_url` with its database name replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &base[..host_end])
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database");
        }
    }
}

/// One server instance on a test database; several may share one database.
pub struct TestApp {
    pub state: AppState,
    pub db: Arc<TestDb>,
    router: Router,
}

/// A configuration as the server would build it from flags, with a cheap
/// password hash so tests run fast (stored hashes carry their own cost).
/// The registration key is [`API_KEY`] unless `extra` sets `--api-key`
/// (`--api-key ""` disables sign-up).
pub fn test_config(database_url: &str, extra: &[&str]) -> Config {
    use clap::Parser;
    let mut args = vec!["pushtoken", "--database-url", database_url];
    if !extra.contains(&"--api-key") {
        args.extend(["--api-key", API_KEY]);
    }
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).expect("test flags parse");
    let mut config = Config::from_settings(&cli.settings).expect("test config is valid");
    config.password_cost = argon2::Params::new(1024, 1, 1, None).expect("argon2 params");
    config
}

impl TestApp {
    pub async fn sqlite() -> Self {
        Self::start(TestDb::sqlite(), &[]).await
    }

    pub async fn postgres() -> Self {
        Self::start(TestDb::postgres().await, &[]).await
    }

    /// A server on `db` with extra command-line flags.
    pub async fn start(db: TestDb, extra: &[&str]) -> Self {
        let url = db.url();
        Self::start_at(Arc::new(db), &url, extra).await
    }

    /// A server on `db`, reaching it at `url`.
    pub async fn start_at(db: Arc<TestDb>, url: &str, extra: &[&str]) -> Self {
        let config = test_config(url, extra);
        let state = pushtoken::state(config).await.expect("server state");
        let router = pushtoken::app(state.clone());
        TestApp { state, db, router }
    }

    /// The router, to send requests the helpers cannot express.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// A second server instance on the same database, running beside this one.
    pub async fn another_instance(&self) -> Self {
        self.another_instance_with(&[]).await
    }

    /// [`another_instance`](Self::another_instance) with other flags.
    pub async fn another_instance_with(&self, extra: &[&str]) -> Self {
        Self::start_at(self.db.clone(), &self.db.url(), extra).await
    }

    /// The same database under a new server with other flags.
    pub async fn with_flags(self, extra: &[&str]) -> Self {
        self.state.store.close().await;
        let url = self.db.url();
        Self::start_at(self.db, &url, extra).await
    }

    /// Stops this server and starts a new one on the same database.
    pub async fn restart(self) -> Self {
        self.with_flags(&[]).await
    }

    /// Sends one request; `body` is sent as-is when it is a string, as JSON
    /// otherwise.
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let bytes = match body {
            None => Vec::new(),
            Some(Value::String(raw)) => raw.into_bytes(),
            Some(json) => serde_json::to_vec(&json).expect("json"),
        };
        self.send_raw(method, uri, headers, bytes).await
    }

    /// Sends one request and reads a JSON answer, checking that its status is
    /// one the OpenAPI document lists for the route.
    pub async fn send_raw(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let (status, headers, bytes) = self.send_bytes(method.clone(), uri, headers, body).await;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!("response is not JSON: {}", String::from_utf8_lossy(&bytes))
        });
        crate::openapi::assert_documented(&method, uri, status, &body);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends one request and returns the raw answer.
    pub async fn send_bytes(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, bytes.to_vec())
    }

    pub async fn get(&self, uri: &str, token: &str) -> Reply {
        self.request(Method::GET, uri, &[("token", token)], None)
            .await
    }

    pub async fn post(&self, uri: &str, token: &str, body: Value) -> Reply {
        self.request(Method::POST, uri, &[("token", token)], Some(body))
            .await
    }

    pub async fn put(&self, uri: &str, token: &str, body: Value) -> Reply {
        self.request(Method::PUT, uri, &[("token", token)], Some(body))
            .await
    }

    pub async fn delete(&self, uri: &str, token: &str) -> Reply {
        self.request(Method::DELETE, uri, &[("token", token)], None)
            .await
    }

    /// `POST /v1/api/user` without a token header.
    pub async fn post_anonymous(&self, uri: &str, body: Value) -> Reply {
        self.request(Method::POST, uri, &[], Some(body)).await
    }

    /// Signs `username` up with the test password; returns the user id.
    pub async fn sign_up(&self, username: &str) -> i64 {
        let reply = self
            .post_anonymous(
                "/v1/api/user",
                json!({ "username": username, "password": PASSWORD, "apikey": API_KEY }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "sign up {username}: {:?}",
            reply.body
        );
        reply.body["id"].as_i64().expect("id")
    }

    pub async fn login(&self, username: &str, password: &str) -> Reply {
        self.post_anonymous(
            "/v1/api/user/login",
            json!({ "username": username, "password": password }),
        )
        .await
    }

    /// A signed-up, logged-in user.
    pub async fn user(&self, username: &str) -> TestUser {
        let id = self.sign_up(username).await;
        let reply = self.login(username, PASSWORD).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "login {username}: {:?}",
            reply.body
        );
        TestUser {
            id,
            username: username.to_owned(),
            token: reply.body["token"].as_str().expect("token").to_owned(),
            reflash_key: reply.body["reflash_key"]
                .as_str()
                .expect("reflash_key")
                .to_owned(),
        }
    }
}

pub struct TestUser {
    pub id: i64,
    pub username: String,
    pub token: String,
    pub reflash_key: String,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts a vendor error: this status and `{"message": message}`.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, message: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["message"], message, "body: {}", self.body);
    }

    #[track_caller]
    pub fn assert_success(&self, status: StatusCode) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["message"], "success", "body: {}", self.body);
    }
}

/// A valid 64-character push token, distinct for each `n`.
pub fn push_token(n: u32) -> String {
    format!("{n:064x}")
}

/// A minimal valid registration body.
pub fn registration(n: u32) -> Value {
    json!({ "push_token": push_token(n), "language": "en" })
}

impl TestApp {
    /// The text values of every row of `table`, read straight from the test
    /// database beside the server, to see what is really stored.
    pub async fn stored_text(&self, table: &str) -> Vec<Vec<String>> {
        fn texts<R: sqlx::Row>(rows: &[R]) -> Vec<Vec<String>>
        where
            usize: sqlx::ColumnIndex<R>,
            String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .filter_map(|i| row.try_get::<String, _>(i).ok())
                        .collect()
                })
                .collect()
        }
        let sql = format!("SELECT * FROM {table}");
        let url = self.db.url();
        match &*self.db {
            TestDb::Sqlite { .. } => {
                let pool = sqlx::SqlitePool::connect(&url)
                    .await
                    .expect("open the SQLite file");
                let rows = sqlx::query(&sql)
                    .fetch_all(&pool)
                    .await
                    .expect("read the table");
                pool.close().await;
                texts(&rows)
            }
            TestDb::Postgres { .. } => {
                let pool = sqlx::PgPool::connect(&url)
                    .await
                    .expect("connect to the test database");
                let rows = sqlx::query(&sql)
                    .fetch_all(&pool)
                    .await
                    .expect("read the table");
                pool.close().await;
                texts(&rows)
            }
        }
    }
}

impl Reply {
    /// Asserts a 200 with a JSON array body.
    #[track_caller]
    pub fn assert_success_list(&self) {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        assert!(self.body.is_array(), "body: {}", self.body);
    }
}
