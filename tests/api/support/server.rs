//! The real binary: started on port 0 on a test database, spoken to over
//! TCP, and stopped with a signal.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::api::{login_body, sign_up_body, API_KEY, LOGIN, PASSWORD, SIGN_UP};
use super::wire::{exchange, request, token_header};

const BIN: &str = env!("CARGO_BIN_EXE_pushtoken");

/// How long the server may take to start, to answer one request, or to stop.
const WAIT: Duration = Duration::from_secs(30);

/// The SQLite URL of a database file in `dir`.
pub fn sqlite_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("pushtoken.db").display())
}

/// The binary on `database_url`, listening on free ports, with the test
/// registration key and nothing else of the caller's environment.
pub fn command(database_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("PUSHTOKEN_LISTEN", "127.0.0.1:0")
        .env("PUSHTOKEN_PUSH_LISTEN", "127.0.0.1:0")
        .env("PUSHTOKEN_API_KEY", API_KEY)
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    cmd
}

/// A running server and the address it reported.
pub struct Server {
    pub child: Child,
    pub address: String,
}

/// A server's log (its stderr), every line kept as it comes.
pub struct ServerLog {
    lines: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
}

impl Server {
    pub async fn start(database_url: &str) -> Server {
        Server::spawn(command(database_url)).await
    }

    /// Starts the binary with extra environment settings.
    pub async fn start_with(database_url: &str, env: &[(&str, &str)]) -> Server {
        let mut cmd = command(database_url);
        for (key, value) in env {
            cmd.env(key, value);
        }
        Server::spawn(cmd).await
    }

    /// Runs `cmd` and waits for the address it reports listening on.
    pub async fn spawn(cmd: Command) -> Server {
        Server::launch(cmd, false).await.0
    }

    /// [`spawn`](Self::spawn), keeping the whole log.
    pub async fn spawn_logged(cmd: Command) -> (Server, ServerLog) {
        Server::launch(cmd, true).await
    }

    async fn launch(mut cmd: Command, keep_log: bool) -> (Server, ServerLog) {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn pushtoken");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let address = tokio::time::timeout(WAIT, async {
            while let Some(line) = stderr.next_line().await.expect("stderr") {
                let address = listening_address(&line);
                lines.lock().unwrap().push(line);
                if let Some(address) = address {
                    return address;
                }
            }
            panic!(
                "server exited before listening:\n{}",
                lines.lock().unwrap().join("\n")
            );
        })
        .await
        .expect("server listens within 30s");
        // Keep reading the log so the server never blocks on a full pipe.
        let kept = lines.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                if keep_log {
                    kept.lock().unwrap().push(line);
                }
            }
        });
        (Server { child, address }, ServerLog { lines, reader })
    }

    /// One HTTP/1.1 request over a fresh TCP connection, with these headers
    /// and this raw body; the status and the body as text.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let request = request(method, path, &self.address, headers, body);
        let (status, body) =
            tokio::time::timeout(WAIT, exchange(&self.address, request.as_bytes()))
                .await
                .unwrap_or_else(|_| panic!("{method} {path} answers within 30s"))
                .unwrap_or_else(|failure| panic!("{method} {path}: {failure:?}"));
        (status, String::from_utf8(body).expect("utf-8 response"))
    }

    /// One request with an optional session token and JSON body; the body
    /// as text.
    pub async fn call_text(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.send(method, path, &token_header(token), &body).await
    }

    /// One request with an optional session token and JSON body, answered
    /// in JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, body) = self.call_text(method, path, token, body).await;
        let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("json body: {body}"));
        (status, json)
    }

    /// Signs `username` up and logs in; returns the session token.
    pub async fn session(&self, username: &str) -> String {
        let (status, body) = self
            .call("POST", SIGN_UP, None, Some(sign_up_body(username)))
            .await;
        assert_eq!(status, 201, "sign up {username}: {body}");
        let (status, body) = self
            .call("POST", LOGIN, None, Some(login_body(username, PASSWORD)))
            .await;
        assert_eq!(status, 201, "login {username}: {body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// The sessions of `count` new users, `{prefix}_0`, `{prefix}_1`, ….
    pub async fn sessions(&self, prefix: &str, count: usize) -> Vec<String> {
        let mut sessions = Vec::new();
        for n in 0..count {
            sessions.push(self.session(&format!("{prefix}_{n}")).await);
        }
        sessions
    }

    /// Sends SIGTERM (a graceful stop) through the `kill` command.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) {
        self.sigterm();
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits within 30s")
            .unwrap();
        assert!(exit.success(), "exit status {exit:?}");
    }

    /// Kills the server with SIGKILL and waits until it is gone.
    pub async fn kill_hard(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("a killed server is gone within 10s")
            .unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }
}

impl ServerLog {
    /// The lines logged so far, while the server runs (before its
    /// "listening on" line, at least).
    pub fn so_far(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line of the log, once the server has closed it (exited).
    pub async fn lines(self) -> Vec<String> {
        tokio::time::timeout(WAIT, self.reader)
            .await
            .expect("the log ends within 30s of the exit")
            .expect("log reader");
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

/// The address in a "listening on <address>" log line, text or JSON.
fn listening_address(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let address: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!address.is_empty()).then_some(address)
}
