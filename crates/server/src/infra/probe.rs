//! `jetway-server healthcheck`: asks a running server on this host whether it is ready, for container
//! healthchecks. The runtime image has no shell, curl or wget, so the binary probes itself: it sends
//! `GET /readyz` to the health port from the same configuration the server reads, and exits 0 only on
//! `200 OK`. With TLS on (`TLS_CERT_FILE`), over TLS: the probe accepts exactly the certificate in
//! that file, the server's own, so it needs no CA and works with any certificate.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::{
    self, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use crate::infra::{config::Config, tls};

/// How long the probe waits to connect, and then for the answer. A container runtime has its own
/// timeout; this one keeps a wedged server from holding the probe until then.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of the answer read: the status line is all the probe needs.
const MAX_ANSWER: u64 = 1024;

/// Why the server is not ready, as the probe saw it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered on the health port, or the answer did not arrive in time.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// The health address probed.
        addr: SocketAddr,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// TLS is on, but the server's certificate file cannot be used.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// The server answered, but not with `200 OK`.
    #[error("{addr}/readyz answered {status_line:?}")]
    NotReady {
        /// The health address probed.
        addr: SocketAddr,
        /// The first line of the answer.
        status_line: String,
    },
}

/// The address a probe on this host uses to reach the health port: the listen address, or loopback
/// when the server listens on every interface.
pub fn health_addr(config: &Config) -> SocketAddr {
    let host = match config.listen_host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        host => host,
    };
    SocketAddr::new(host, config.health_port)
}

/// Asks `addr` for `/readyz` and succeeds only on `200 OK`; over TLS when `own_cert` (the server's
/// `TLS_CERT_FILE`) is given.
pub fn check(addr: SocketAddr, own_cert: Option<&Path>) -> Result<(), ProbeError> {
    let unreachable = |source| ProbeError::Unreachable { addr, source };
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(unreachable)?;
    let mut stream: Box<dyn ReadWrite> = match own_cert {
        None => Box::new(stream),
        Some(path) => {
            let leaf = tls::certificates("TLS_CERT_FILE", path)?.swap_remove(0);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|err| unreachable(std::io::Error::other(err)))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(OwnCertificate { leaf, provider }))
                .with_no_client_auth();
            let connection = ClientConnection::new(Arc::new(config), ServerName::from(addr.ip()))
                .map_err(|err| unreachable(std::io::Error::other(err)))?;
            Box::new(StreamOwned::new(connection, stream))
        }
    };
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(unreachable)?;
    let mut answer = Vec::new();
    // A server that closes without TLS's close_notify after its answer ends the read with an
    // error; the answer read so far still counts.
    let read = stream.take(MAX_ANSWER).read_to_end(&mut answer);
    if answer.is_empty() {
        read.map_err(unreachable)?;
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    // "HTTP/1.1 200 OK": the version varies with the server, the code is the second word.
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotReady { addr, status_line })
    }
}

/// A stream to read the answer from and write the request to: TCP or TLS.
trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}

/// Accepts exactly the server's own certificate: the probe runs beside the server, reads its
/// `TLS_CERT_FILE`, and sends nothing secret. Handshake signatures are still verified, so only
/// the holder of the key passes.
#[derive(Debug)]
struct OwnCertificate {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for OwnCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the health port presents another certificate than TLS_CERT_FILE's".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
