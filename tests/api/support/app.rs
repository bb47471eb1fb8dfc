//! The server in-process: a `TestApp` per test, on a database of its own,
//! driven through the router.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use pushtoken::config::{Cli, Config};
use pushtoken::AppState;
use serde_json::Value;
use tower::ServiceExt;

use super::api::{login_body, sign_up_body, API_KEY, LOGIN, PASSWORD, SIGN_UP};
use super::openapi::assert_documented;
use super::TestDb;

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

    /// The same database under a new server whose password hashes cost
    /// `memory_kib` and `iterations` (the tests' default is as cheap as
    /// Argon2 allows), with other flags.
    pub async fn with_password_cost(
        self,
        memory_kib: u32,
        iterations: u32,
        extra: &[&str],
    ) -> Self {
        self.state.store.close().await;
        let url = self.db.url();
        let mut config = test_config(&url, extra);
        config.password_cost =
            argon2::Params::new(memory_kib, iterations, 1, None).expect("argon2 params");
        let state = pushtoken::state(config).await.expect("server state");
        let router = pushtoken::app(state.clone());
        TestApp {
            state,
            db: self.db,
            router,
        }
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
        assert_documented(&method, uri, status, &body);
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
        let reply = self.post_anonymous(SIGN_UP, sign_up_body(username)).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "sign up {username}: {:?}",
            reply.body
        );
        reply.body["id"].as_i64().expect("id")
    }

    pub async fn login(&self, username: &str, password: &str) -> Reply {
        self.post_anonymous(LOGIN, login_body(username, password))
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

    /// The text values of every row of `table`, read straight from the test
    /// database beside the server, to see what is really stored.
    pub async fn stored_text(&self, table: &str) -> Vec<Vec<String>> {
        let sql = format!("SELECT * FROM {table}");
        let url = self.db.url();
        match &*self.db {
            TestDb::Sqlite { .. } => texts_of::<sqlx::Sqlite>(&url, &sql).await,
            TestDb::Postgres { .. } => texts_of::<sqlx::Postgres>(&url, &sql).await,
        }
    }

    /// Runs `sql`, a statement without arguments, straight on the test
    /// database beside the server (to make rows look old, say); how many
    /// rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        let url = self.db.url();
        match &*self.db {
            TestDb::Sqlite { .. } => execute_on::<sqlx::Sqlite>(&url, sql).await,
            TestDb::Postgres { .. } => execute_on::<sqlx::Postgres>(&url, sql).await,
        }
    }

    /// The value of the metric whose line starts with `name` and holds
    /// every label of `labels`, summed over the lines that do; 0 when none
    /// does. (Metrics are process-wide: other tests may add to them.)
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (_, _, body) = self
            .send_bytes(Method::GET, "/metrics", &[], Vec::new())
            .await;
        let text = String::from_utf8(body).expect("metrics are text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
                    && labels.iter().all(|label| line.contains(label))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
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

    /// Asserts a 200 with a JSON array body.
    #[track_caller]
    pub fn assert_success_list(&self) {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        assert!(self.body.is_array(), "body: {}", self.body);
    }
}

/// The text values of the rows `sql` reads, on a connection of its own to
/// the database at `url`.
async fn texts_of<DB: sqlx::Database>(url: &str, sql: &str) -> Vec<Vec<String>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
{
    use sqlx::Row;
    let pool = sqlx::Pool::<DB>::connect(url)
        .await
        .expect("connect to the test database");
    let rows = sqlx::query(sql)
        .fetch_all(&pool)
        .await
        .expect("read the table");
    pool.close().await;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .filter_map(|i| row.try_get::<String, _>(i).ok())
                .collect()
        })
        .collect()
}

/// Runs `sql` on a connection of its own to the database at `url`; how
/// many rows it changed.
async fn execute_on<DB: sqlx::Database>(url: &str, sql: &str) -> u64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    DB::QueryResult: RowsAffected,
{
    let pool = sqlx::Pool::<DB>::connect(url)
        .await
        .expect("connect to the test database");
    let done = sqlx::query(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    done.rows_affected()
}

/// The rows a statement changed, whichever database ran it.
trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A request body that never arrives.
pub fn stalled_body() -> Body {
    Body::from_stream(futures_util::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >())
}
