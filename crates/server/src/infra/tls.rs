//! TLS on every listener: the server certificate (`TLS_CERT_FILE`, `TLS_KEY_FILE`), client
//! certificates required with `TLS_CLIENT_CA_FILE` (mTLS, on the gRPC and HTTP API ports, not the
//! health port), the handshake of each accepted connection, and a clear answer to a client that
//! speaks plain text to a TLS port.
//!
//! The certificate and key are checked at start ([`ServerTls::load`]): an unreadable file, a key
//! that does not match its certificate, or a certificate that has expired or is not valid yet stops
//! the server with one line. Afterwards [`ReloadingCert`] looks at the files' modification times at
//! most once a second, during a handshake, and loads them again when either changed: a rotated
//! certificate serves new connections without a restart, and open connections keep theirs. A
//! rotation that fails the same checks (say the key is written a moment after the certificate) is
//! logged and the previous certificate stays in force until the files change again.
//!
//! A handler reads the client's certificate chain with tonic's `Request::peer_certs()` (leaf first),
//! and its address with `Request::remote_addr()`, on plain and TLS connections alike.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
        sign::CertifiedKey,
    },
    server::TlsStream,
};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::infra::{config::TlsConfig, locked};

/// How long a client has to complete the TLS handshake (or, on a TLS port, to send its first
/// bytes) before its connection is closed: a connection that never says hello holds one of its
/// port's connection slots meanwhile.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate files are looked at no more often than this.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The first byte of a TLS record that carries a handshake message, as every ClientHello starts.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-text client on a TLS port is told.
pub const PLAINTEXT_ON_TLS_PORT: &str = "this port requires TLS: connect with https:// and trust \
     the server's CA (grpcurl: -cacert instead of -plaintext; curl: https:// and --cacert)";

/// Connections whose TLS handshake failed (or that spoke plain text to a TLS port), by port.
pub const TLS_HANDSHAKE_FAILURES: &str = "jetway_tls_handshake_failures_total";

/// Why TLS could not be set up at start. Displays as one line naming the variable and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{variable}={path:?} cannot be read: {source}")]
    Unreadable {
        /// The variable that names the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },
    /// A file holds nothing usable of what the variable wants.
    #[error("{variable}={path:?} {reason}")]
    Invalid {
        /// The variable that names the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. `holds no PEM certificate`.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("TLS_KEY_FILE={key:?} is not the key of the certificate in TLS_CERT_FILE={cert:?}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA file holds no certificate rustls can verify clients with.
    #[error("TLS_CLIENT_CA_FILE: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS setup of the listeners, loaded from [`TlsConfig`]. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    grpc: TlsAcceptor,
    api: TlsAcceptor,
    health: TlsAcceptor,
    mtls: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads and checks the files `config` names; `Ok(None)` when TLS is off (no certificate
    /// configured).
    pub fn from_config(config: &TlsConfig) -> Result<Option<ServerTls>, TlsError> {
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                ServerTls::load(cert, key, config.client_ca_file.as_deref()).map(Some)
            }
            // The configuration refuses one without the other.
            _ => Ok(None),
        }
    }

    /// Loads the certificate chain at `cert` and its key at `key` (PEM), checked as the module
    /// docs say; with `client_ca`, the gRPC and HTTP API ports require client certificates issued
    /// by one of the CA certificates in that file.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Arc::new(ReloadingCert::load(
            cert.to_owned(),
            key.to_owned(),
            provider.clone(),
        )?);
        // The data APIs verify clients alike: with TLS_CLIENT_CA_FILE, a client without a
        // certificate from that CA reaches neither, so the HTTP API is no way around mTLS.
        let verifier = match client_ca {
            Some(path) => Some(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(client_roots(path)?),
                    provider.clone(),
                )
                .build()?,
            ),
            None => None,
        };
        let verified = |alpn: &[u8]| -> Result<ServerConfig, TlsError> {
            let config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?;
            let config = match &verifier {
                Some(verifier) => config.with_client_cert_verifier(verifier.clone()),
                None => config.with_no_client_auth(),
            };
            let mut config = config.with_cert_resolver(resolver.clone());
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(config)
        };
        let grpc = verified(b"h2")?;
        let api = verified(b"http/1.1")?;
        // Probes (the kubelet's among them) cannot present a client certificate: the health port
        // is encrypted but asks for none.
        let mut health = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        health.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            grpc: TlsAcceptor::from(Arc::new(grpc)),
            api: TlsAcceptor::from(Arc::new(api)),
            health: TlsAcceptor::from(Arc::new(health)),
            mtls: client_ca.is_some(),
        })
    }

    /// True when the gRPC and HTTP API ports require client certificates.
    pub fn mtls(&self) -> bool {
        self.mtls
    }

    /// Completes the handshake of a connection to the gRPC port (see [`accept`]).
    pub async fn accept_grpc(&self, stream: TcpStream) -> io::Result<Accepted> {
        accept(&self.grpc, stream).await
    }

    /// Completes the handshake of a connection to the HTTP API port (see [`accept`]).
    pub async fn accept_api(&self, stream: TcpStream) -> io::Result<Accepted> {
        accept(&self.api, stream).await
    }

    /// Completes the handshake of a connection to the health port (see [`accept`]).
    pub async fn accept_health(&self, stream: TcpStream) -> io::Result<Accepted> {
        accept(&self.health, stream).await
    }
}

/// What arrived on a TLS port.
pub enum Accepted {
    /// A completed TLS handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// A client that does not speak TLS: its first byte cannot start a handshake.
    Plaintext(TcpStream),
}

/// Waits for the client's first byte, then completes the TLS handshake, or hands back a client that
/// speaks plain text, so the port can tell it what is wrong. Not bounded in time: the caller bounds
/// it with [`TLS_HANDSHAKE_TIMEOUT`].
async fn accept(acceptor: &TlsAcceptor, stream: TcpStream) -> io::Result<Accepted> {
    let mut first = [0_u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(Accepted::Plaintext(stream));
    }
    Ok(Accepted::Tls(Box::new(acceptor.accept(stream).await?)))
}

/// Answers a plain-text gRPC client on the TLS port: every call it makes fails UNAVAILABLE with
/// [`PLAINTEXT_ON_TLS_PORT`], which its client library shows, instead of a bare connection reset.
pub async fn refuse_plaintext_grpc(stream: TcpStream) {
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, std::convert::Infallible>(
            tonic::Status::unavailable(PLAINTEXT_ON_TLS_PORT).into_http::<tonic::body::Body>(),
        )
    });
    let connection = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    // Long enough for the client to read its answers, bounded so it cannot hold the slot.
    if let Ok(Err(err)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connection).await {
        tracing::debug!(%err, "plain-text connection to the TLS gRPC port ended");
    }
}

/// Answers a plain-text HTTP client on a TLS HTTP port (health, API) with `400` and
/// [`PLAINTEXT_ON_TLS_PORT`], then closes the connection.
pub async fn refuse_plaintext_http(mut stream: TcpStream) {
    // The request is read first: closing a socket with unread data resets it, and the client would
    // see the reset instead of the answer.
    let mut request = [0_u8; 4096];
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{PLAINTEXT_ON_TLS_PORT}\n",
        PLAINTEXT_ON_TLS_PORT.len() + 1
    );
    let exchange = async {
        // What it asked does not matter: every request gets the same answer.
        let _request_bytes = stream.read(&mut request).await?;
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    if let Ok(Err(err)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, exchange).await {
        tracing::debug!(%err, "plain-text connection to a TLS HTTP port ended");
    }
}

/// A connection of either listener, in plain text or TLS.
pub enum Io {
    /// Plain TCP (TLS off).
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// tonic's TCP details of the connection.
    pub fn tcp_info(&self) -> TcpConnectInfo {
        match self {
            Io::Plain(stream) => stream.connect_info(),
            Io::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }

    /// tonic's TLS details (the client's certificates among them), on a TLS connection.
    pub fn tls_info(&self) -> Option<TlsConnectInfo<TcpConnectInfo>> {
        match self {
            Io::Plain(_) => None,
            Io::Tls(stream) => Some(stream.connect_info()),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The server certificate, loaded again when its files change (see the module docs).
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

/// The certificate in force, and what the files looked like when it was checked.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// The modification times of the certificate and key files.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl ReloadingCert {
    fn load(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, TlsError> {
        let stamp = stamp(&cert, &key);
        let loaded = certified_key(&cert, &key, &provider, SystemTime::now())?;
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            state: Mutex::new(Loaded {
                key: Arc::new(loaded),
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to present now, after loading the files again if they changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = locked(&self.state);
        if state.checked.elapsed() < RELOAD_CHECK_INTERVAL {
            return state.key.clone();
        }
        state.checked = Instant::now();
        let stamp = stamp(&self.cert, &self.key);
        if stamp == state.stamp {
            return state.key.clone();
        }
        // Reading two small files during one handshake in a while: cheaper than a task of its own.
        match certified_key(&self.cert, &self.key, &self.provider, SystemTime::now()) {
            Ok(key) => {
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                state.key = Arc::new(key);
            }
            Err(err) => {
                tracing::warn!(%err, "the changed TLS files were not loaded; the previous certificate stays in force");
            }
        }
        // A failed load is not retried until the files change again.
        state.stamp = stamp;
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        variable,
        path: path.to_owned(),
        source,
    })
}

/// The certificates (PEM) in the file `variable` names; at least one.
pub(crate) fn certificates(
    variable: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        variable,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&read(variable, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(format!("is not PEM: {err}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// Loads the certificate chain and key and checks them as the module docs say, at `now`.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates("TLS_CERT_FILE", cert)?;
    let invalid_key = |reason: String| TlsError::Invalid {
        variable: "TLS_KEY_FILE",
        path: key.to_owned(),
        reason,
    };
    let key_der = PrivateKeyDer::from_pem_slice(&read("TLS_KEY_FILE", key)?)
        .map_err(|err| invalid_key(format!("holds no PEM private key ({err})")))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| invalid_key(format!("is not a usable private key ({err})")))?;
    let (not_before, not_after) = validity(&chain[0]).ok_or_else(|| TlsError::Invalid {
        variable: "TLS_CERT_FILE",
        path: cert.to_owned(),
        reason: "holds a certificate whose validity cannot be read".to_owned(),
    })?;
    let now = time::OffsetDateTime::from(now);
    let expired = |reason: String| TlsError::Invalid {
        variable: "TLS_CERT_FILE",
        path: cert.to_owned(),
        reason,
    };
    if now > not_after {
        return Err(expired(format!(
            "holds a certificate that expired on {not_after}"
        )));
    }
    if now < not_before {
        return Err(expired(format!(
            "holds a certificate that is not valid before {not_before}"
        )));
    }
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        Err(other) => Err(other.into()),
    }
}

fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("TLS_CLIENT_CA_FILE", path)? {
        roots.add(cert).map_err(|err| TlsError::Invalid {
            variable: "TLS_CLIENT_CA_FILE",
            path: path.to_owned(),
            reason: format!("holds a certificate that cannot be a CA ({err})"),
        })?;
    }
    Ok(roots)
}

/// The validity period (notBefore, notAfter) of a DER certificate, or `None` if it does not parse.
/// rustls checks a peer's validity but exposes none of it, and this is the only field of the
/// certificate the server reads itself.
fn validity(der: &[u8]) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    // signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    let (0x30, certificate, _) = der_element(der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _serial_signature_issuer in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (0x30, validity, _) = der_element(tbs)? else {
        return None;
    };
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some((not_before, not_after))
}

/// The tag, contents and what follows of the DER element at the start of `input`.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0_usize, |len, &byte| (len << 8) | usize::from(byte))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// A UTCTime or GeneralizedTime at the start of `input` (RFC 5280: UTC, whole seconds).
fn der_time(input: &[u8]) -> Option<(time::OffsetDateTime, &[u8])> {
    let (tag, contents, rest) = der_element(input)?;
    let text = std::str::from_utf8(contents).ok()?.strip_suffix('Z')?;
    let (year, digits) = match tag {
        // UTCTime's two-digit years: 50 to 99 are 19xx, RFC 5280 says.
        0x17 => {
            let year: i32 = text.get(..2)?.parse().ok()?;
            (if year >= 50 { 1900 } else { 2000 } + year, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if digits.len() != 10 {
        return None;
    }
    let two = |at: usize| digits.get(at..at + 2)?.parse::<u8>().ok();
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(two(0)?).ok()?, two(2)?).ok()?;
    let time = time::Time::from_hms(two(4)?, two(6)?, two(8)?).ok()?;
    Some((time::PrimitiveDateTime::new(date, time).assume_utc(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetway_client::dev_certs::DevCa;
    use time::{Duration as Span, OffsetDateTime};

    #[test]
    fn the_validity_is_read_from_the_certificate() {
        let ca = DevCa::new().unwrap();
        let not_before = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Span::days(3);
        let not_after = not_before + Span::days(2);
        let server = ca.server_between(not_before, not_after).unwrap();
        let der = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
        assert_eq!(validity(&der), Some((not_before, not_after)));
        assert_eq!(
            validity(&der[..der.len() / 2]),
            None,
            "a truncated certificate"
        );
    }

    #[test]
    fn both_time_forms_parse() {
        // UTCTime 2049-12-31 23:59:59 and GeneralizedTime 2050-01-01 00:00:00.
        let utc = b"\x17\x0d491231235959Z";
        let generalized = b"\x18\x0f20500101000000Z";
        let (at, rest) = der_time(utc).unwrap();
        assert!(rest.is_empty());
        assert_eq!(at.unix_timestamp(), 2_524_607_999);
        assert_eq!(
            der_time(generalized).unwrap().0.unix_timestamp(),
            2_524_608_000
        );
        assert_eq!(der_time(b"\x17\x0b4912312359Z"), None, "no seconds");
    }
}
