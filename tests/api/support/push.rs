//! A push-socket client of the tests' own, speaking the protocol byte by
//! byte as the public clients do: TLS without verifying the certificate,
//! an 8-byte little-endian header (command, payload length), the payload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::TestApp;

pub const HEARTBEAT: i32 = 0;
pub const REGISTER: i32 = 1;
pub const TOKEN: i32 = 2;
pub const EVENT: i32 = 3;

/// Long enough for anything the server does at once on a busy machine.
pub const PROMPTLY: Duration = Duration::from_secs(5);

impl TestApp {
    /// Serves this server's push socket on a port of its own; its address.
    pub async fn push_socket(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let tls = pushtoken::push::tls_config(&self.state.config).expect("push TLS");
        tokio::spawn(pushtoken::push::serve(
            self.state.push.clone(),
            listener,
            tls,
            std::future::pending(),
        ));
        address
    }
}

/// What a read from the socket gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Frame(i32, Vec<u8>),
    /// The server closed the connection (or broke it off).
    Closed,
    /// Nothing within the wait.
    Nothing,
}

pub struct PushClient {
    tls: TlsStream<TcpStream>,
}

impl PushClient {
    /// Connects over TLS 1.2 or 1.3, whichever the server prefers, naming
    /// a vendor host (SNI).
    pub async fn connect(address: SocketAddr) -> Self {
        let versions = [
            &tokio_rustls::rustls::version::TLS13,
            &tokio_rustls::rustls::version::TLS12,
        ];
        Self::connect_with(address, &versions, true)
            .await
            .expect("TLS handshake")
    }

    /// Connects offering only these TLS versions, naming the host (SNI) or
    /// not.
    pub async fn connect_with(
        address: SocketAddr,
        versions: &[&'static tokio_rustls::rustls::SupportedProtocolVersion],
        server_name: bool,
    ) -> std::io::Result<Self> {
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth();
        config.enable_sni = server_name;
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::try_from("eurpush.lancens.com").expect("name");
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Self { tls })
    }

    /// The TLS version agreed on.
    pub fn tls_version(&self) -> Option<tokio_rustls::rustls::ProtocolVersion> {
        self.tls.get_ref().1.protocol_version()
    }

    /// Sends a frame.
    pub async fn send(&mut self, command: i32, payload: &[u8]) {
        let mut bytes = command.to_le_bytes().to_vec();
        bytes.extend((payload.len() as i32).to_le_bytes());
        bytes.extend_from_slice(payload);
        self.send_raw(&bytes).await;
    }

    /// Sends bytes as they are (the server may have closed already).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes).await;
        let _ = self.tls.flush().await;
    }

    /// Registers with this `imei` (and `bundle_id`, when given).
    pub async fn send_register(&mut self, imei: &str, bundle_id: Option<&str>) {
        let mut register = json!({
            "imei": imei, "imsi": "460001234567890", "type": "android", "brand": "Xiaomi",
        });
        if let Some(bundle_id) = bundle_id {
            register["bundle_id"] = bundle_id.into();
        }
        self.send(REGISTER, register.to_string().as_bytes()).await;
    }

    /// Registers and reads the token the server answers with.
    pub async fn register(&mut self, imei: &str, bundle_id: Option<&str>) -> String {
        self.send_register(imei, bundle_id).await;
        match self.read(PROMPTLY).await {
            Read::Frame(TOKEN, payload) => {
                let answer: Value = serde_json::from_slice(&payload).expect("token JSON");
                answer["token"].as_str().expect("token").to_owned()
            }
            other => panic!("expected the token frame, got {other:?}"),
        }
    }

    /// The next frame within `wait`.
    pub async fn read(&mut self, wait: Duration) -> Read {
        match tokio::time::timeout(wait, self.read_frame()).await {
            Ok(Some((command, payload))) => Read::Frame(command, payload),
            Ok(None) => Read::Closed,
            Err(_) => Read::Nothing,
        }
    }

    /// The next frame that is not a heartbeat, within `wait`.
    pub async fn read_skipping_heartbeats(&mut self, wait: Duration) -> Read {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Frame(HEARTBEAT, _) => continue,
                other => return other,
            }
        }
    }

    /// Asserts that the server closes the connection within `wait`,
    /// sending nothing but heartbeats first.
    pub async fn assert_closed_within(&mut self, wait: Duration) {
        let read = self.read_skipping_heartbeats(wait).await;
        assert_eq!(read, Read::Closed, "the connection should close");
    }

    async fn read_frame(&mut self) -> Option<(i32, Vec<u8>)> {
        let mut header = [0u8; 8];
        self.tls.read_exact(&mut header).await.ok()?;
        let command = i32::from_le_bytes(header[..4].try_into().ok()?);
        let length = i32::from_le_bytes(header[4..].try_into().ok()?);
        let mut payload = vec![0u8; usize::try_from(length).ok()?];
        self.tls.read_exact(&mut payload).await.ok()?;
        Some((command, payload))
    }
}

/// Accepts any certificate, as the public clients do.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let algorithms = ring::default_provider().signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let algorithms = ring::default_provider().signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
