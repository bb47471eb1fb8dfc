//! HTTPS: with a certificate and key the server speaks TLS on its listen
//! address; a bad certificate stops startup with a clear reason.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::support::api::{login_body, sign_up_body, PASSWORD};
use crate::support::server::{self, sqlite_in, Server};
use crate::support::wire::{parse_response, request};

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM
/// files into `dir`; returns its DER for the client's trust store.
fn self_signed(dir: &Path) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert.der().clone()
}

/// The binary on a SQLite file in `dir`, serving HTTPS with the certificate
/// and key [`self_signed`] wrote there.
fn command(dir: &Path) -> Command {
    let mut cmd = server::command(&sqlite_in(&dir.join("db")));
    cmd.env("PUSHTOKEN_TLS_CERT", dir.join("cert.pem"))
        .env("PUSHTOKEN_TLS_KEY", dir.join("key.pem"));
    cmd
}

/// One HTTPS request, verifying the server against `trusted`.
async fn https(
    address: &str,
    trusted: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(address).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the server's certificate");
    let request = request(method, path, "localhost", &[], &body.to_string());
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A peer may close without close_notify; what was read counts.
    let _ = tls.read_to_end(&mut raw).await;
    let (status, body) = parse_response(&raw).expect("an HTTP response");
    (status, serde_json::from_slice(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn with_a_certificate_the_server_speaks_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path());
    let server = Server::spawn(command(dir.path())).await;
    let address = server.address.clone();

    let (status, body) = https(&address, &cert, "GET", "/healthz", json!(null)).await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    let sign_up = sign_up_body("alice_1");
    let (status, _) = https(&address, &cert, "POST", "/v1/api/user", sign_up).await;
    assert_eq!(status, 201);
    let login = login_body("alice_1", PASSWORD);
    let (status, body) = https(&address, &cert, "POST", "/v1/api/user/login", login).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"], "success");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&address).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
    server.stop().await;
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_startup_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    let cases = [
        ("PUSHTOKEN_TLS_CERT", missing.clone(), "certificate"),
        ("PUSHTOKEN_TLS_KEY", missing, "key"),
        ("PUSHTOKEN_TLS_CERT", garbage.clone(), "certificate"),
        ("PUSHTOKEN_TLS_KEY", garbage, "key"),
    ];
    for (variable, path, what) in cases {
        let output = command(dir.path())
            .env(variable, &path)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{variable}={}", path.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.contains(what) && last.contains(&*path.to_string_lossy()),
            "{variable}: {stderr}"
        );
    }
    let output = command(dir.path())
        .env_remove("PUSHTOKEN_TLS_KEY")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("PUSHTOKEN_TLS_KEY"));
}
