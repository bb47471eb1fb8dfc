//! What the harness's programs share: their flags, and latency histograms
//! in microseconds read out in milliseconds.

use std::time::Duration;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a request to the server (its connection included) may take.
pub const REQUEST_WITHIN: Duration = Duration::from_secs(20);

/// The command line, read as `--name value` pairs.
pub struct Args(pub Vec<String>);

impl Args {
    pub fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.0
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(|s| s.as_str())
    }

    pub fn req(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| anyhow!("missing --{name}"))
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| anyhow!("bad --{name} {v}")),
        }
    }
}

/// A histogram of latencies in microseconds, 1 µs to 60 s.
pub fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?)
}

/// Milliseconds at quantile `q` of a histogram of microseconds (0 when empty).
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The largest value of a histogram of microseconds, in milliseconds.
pub fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    }
}

/// `d` in microseconds, within the histograms' bounds.
pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 60_000_000)
}

/// host:port of an `http://host:port` base URL.
pub fn authority(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs"))?;
    Ok(rest.trim_end_matches('/').to_string())
}

/// One keep-alive HTTP/1.1 connection, reopened after a failure.
pub struct Http {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            addr: authority(url)?,
            sender: None,
        })
    }

    pub async fn connect(&mut self) -> Result<()> {
        let stream = tokio::time::timeout(REQUEST_WITHIN, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| anyhow!("no connection to {} in time", self.addr))??;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Signs a user up with the registration key `apikey`, logs them in,
    /// and returns the session token.
    pub async fn sign_up_and_log_in(
        &mut self,
        username: &str,
        password: &str,
        apikey: &str,
    ) -> Result<String> {
        let body =
            serde_json::json!({"username": username, "password": password, "apikey": apikey});
        let (s, b) = self
            .send(Method::POST, "/v1/api/user", &[], Some(body.to_string()))
            .await?;
        if s != StatusCode::CREATED {
            anyhow::bail!("sign-up {username}: {s} {}", String::from_utf8_lossy(&b));
        }
        let body = serde_json::json!({"username": username, "password": password});
        let (s, b) = self
            .send(
                Method::POST,
                "/v1/api/user/login",
                &[],
                Some(body.to_string()),
            )
            .await?;
        if s != StatusCode::CREATED {
            anyhow::bail!("login {username}: {s} {}", String::from_utf8_lossy(&b));
        }
        let v: serde_json::Value = serde_json::from_slice(&b)?;
        Ok(v["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in the login answer"))?
            .to_owned())
    }

    /// Sends one request and reads the whole answer, within
    /// [`REQUEST_WITHIN`].
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes)> {
        let result =
            tokio::time::timeout(REQUEST_WITHIN, self.exchange(method, path, headers, body))
                .await
                .unwrap_or_else(|_| Err(anyhow!("no answer within {REQUEST_WITHIN:?}")));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected");
        sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.as_str());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(b)))?,
            None => req.body(Full::new(Bytes::new()))?,
        };
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
