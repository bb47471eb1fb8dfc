//! `pushtoken notify`: one request to a running server's
//! `POST /v1/api/notify`, with the operator's key.

use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::config::{Config, NotifyArgs};

/// The largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The request body of `notification`: a user of digits is an id.
fn body(notification: &NotifyArgs) -> Value {
    let user = match notification.user.parse::<i64>() {
        Ok(id) => json!(id),
        Err(_) => json!(notification.user),
    };
    let mut event = json!({ "type": notification.kind, "uid": notification.uid });
    if let Some(message) = &notification.message {
        event["message"] = json!(message);
    }
    let mut body = json!({ "user": user, "family": notification.family, "event": event });
    if let Some(ttl) = notification.ttl {
        body["ttl"] = json!(ttl);
    }
    body
}

/// Sends `notification` to its server (else the configured listen address)
/// and returns the answer's status and body.
pub async fn send(
    config: &Config,
    notification: &NotifyArgs,
) -> anyhow::Result<(StatusCode, String)> {
    let key = config
        .notify_key
        .as_deref()
        .context("no notify key: set PUSHTOKEN_NOTIFY_KEY (or PUSHTOKEN_NOTIFY_KEY_FILE)")?;
    let (https, authority) = match notification.server.as_deref() {
        Some(server) => parse_server(server)?,
        None => {
            let mut address = config.listen;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            (config.tls_cert.is_some(), address.to_string())
        }
    };
    let scheme = if https { "https" } else { "http" };
    let request = Request::post(format!("{scheme}://{authority}/v1/api/notify"))
        .header(header::HOST, &authority)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body(notification).to_string()))?;
    let tcp = TcpStream::connect(&authority)
        .await
        .with_context(|| format!("cannot reach the server at {authority}"))?;
    if !https {
        return exchange(tcp, request).await;
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(host, _)| host)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_owned()).context("the server's host name")?;
    let tls = trusting(config)?
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {authority}"))?;
    exchange(tls, request).await
}

/// `http://host:port`, `https://host:port` or `host:port`: whether it is
/// HTTPS, and `host:port`.
fn parse_server(server: &str) -> anyhow::Result<(bool, String)> {
    let (https, rest) = match server.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some((scheme, _)) => anyhow::bail!("--server: {scheme:?} is neither http nor https"),
        None => (false, server),
    };
    let authority = rest.trim_end_matches('/');
    anyhow::ensure!(
        !authority.is_empty() && !authority.contains('/'),
        "--server: expected scheme://host:port, got {server:?}"
    );
    Ok((https, authority.to_owned()))
}

/// A TLS client that trusts the server's own certificate
/// (PUSHTOKEN_TLS_CERT).
fn trusting(config: &Config) -> anyhow::Result<TlsConnector> {
    let cert = config
        .tls_cert
        .as_ref()
        .context("for an https server, set PUSHTOKEN_TLS_CERT to its certificate")?;
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?
    {
        roots.add(der).context("the server's certificate")?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(tls)))
}

async fn exchange<IO>(io: IO, request: Request<Body>) -> anyhow::Result<(StatusCode, String)>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP with the server")?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .context("no answer from the server")?;
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
        .await
        .context("reading the server's answer")?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_of_digits_is_an_id_and_the_event_carries_what_was_given() {
        let notification = NotifyArgs {
            user: "42".into(),
            family: "ring".into(),
            kind: "1".into(),
            uid: "DEV-1".into(),
            message: Some("At the door".into()),
            ttl: Some(30),
            server: None,
        };
        assert_eq!(
            body(&notification),
            json!({ "user": 42, "family": "ring", "ttl": 30,
                    "event": { "type": "1", "uid": "DEV-1", "message": "At the door" } })
        );
        let by_name = NotifyArgs {
            user: "alice_1".into(),
            message: None,
            ttl: None,
            ..notification
        };
        assert_eq!(body(&by_name)["user"], "alice_1");
        assert!(body(&by_name).get("ttl").is_none());
    }

    #[test]
    fn servers_are_a_scheme_and_an_authority() {
        assert_eq!(
            parse_server("http://127.0.0.1:6443").unwrap(),
            (false, "127.0.0.1:6443".into())
        );
        assert_eq!(
            parse_server("https://push.example:443/").unwrap(),
            (true, "push.example:443".into())
        );
        assert_eq!(
            parse_server("localhost:6443").unwrap(),
            (false, "localhost:6443".into())
        );
        assert!(parse_server("ftp://x:1").is_err());
        assert!(parse_server("http://x:1/v1").is_err());
    }
}
