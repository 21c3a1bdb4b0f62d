//! Development certificates (feature `dev-certs`): a CA of its own, a server certificate for
//! `localhost` and `127.0.0.1`, and client certificates, so TLS and mTLS can be tried in a minute
//! (`jetway dev-certs <dir>`) and tested. Not for production: the CA's key sits next to what it
//! signs.

use std::{io, path::Path};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// How long [`DevCa::server`] and [`DevCa::client`] certificates (and the CA) are valid: a year.
pub const DEV_VALIDITY: Duration = Duration::days(365);

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a development certificate: {0}")]
pub struct DevCertError(#[from] rcgen::Error);

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM.
    pub key_pem: String,
}

/// A development certificate authority: signs server and client certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA with a fresh key, valid from now for [`DEV_VALIDITY`].
    pub fn new() -> Result<DevCa, DevCertError> {
        DevCa::named("Jetway development CA")
    }

    /// A new CA with a fresh key and the common name `name`.
    pub fn named(name: &str) -> Result<DevCa, DevCertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = valid_from_now();
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(DevCa {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA's certificate, PEM: what clients trust (`--tls-ca`) and, for mTLS, what the server
    /// trusts (`TLS_CLIENT_CA_FILE`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `localhost` and `127.0.0.1`, valid from now for [`DEV_VALIDITY`].
    pub fn server(&self) -> Result<CertAndKey, DevCertError> {
        let (not_before, not_after) = valid_from_now();
        self.server_between(not_before, not_after)
    }

    /// A server certificate for `localhost` and `127.0.0.1`, valid from `not_before` to
    /// `not_after` (tests make expired ones).
    pub fn server_between(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertAndKey, DevCertError> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name = common_name("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, not_before, not_after)
    }

    /// A client certificate whose subject's common name and DNS subject alternative name are
    /// `name`, valid from now for [`DEV_VALIDITY`].
    pub fn client(&self, name: &str) -> Result<CertAndKey, DevCertError> {
        let (not_before, not_after) = valid_from_now();
        self.client_between(name, not_before, not_after)
    }

    /// A client certificate for `name` valid from `not_before` to `not_after`.
    pub fn client_between(
        &self,
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertAndKey, DevCertError> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name = common_name(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, not_before, not_after)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertAndKey, DevCertError> {
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The files [`write_dev_certs`] writes, by name.
pub const DEV_CERT_FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

/// Writes a new CA (`ca.pem`, `ca-key.pem`), a server certificate for `localhost` and `127.0.0.1`
/// (`server.pem`, `server-key.pem`) and a client certificate for `client_name` (`client.pem`,
/// `client-key.pem`) into `dir`, created if missing. Keys are readable by their owner only.
pub fn write_dev_certs(dir: &Path, client_name: &str) -> io::Result<()> {
    let made = (|| {
        let ca = DevCa::new()?;
        Ok::<_, DevCertError>((ca.server()?, ca.client(client_name)?, ca))
    })();
    let (server, client, ca) = made.map_err(io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let ca_key = ca.issuer.key().serialize_pem();
    let files = [
        ("ca.pem", ca.cert_pem(), false),
        ("ca-key.pem", &ca_key, true),
        ("server.pem", &server.cert_pem, false),
        ("server-key.pem", &server.key_pem, true),
        ("client.pem", &client.cert_pem, false),
        ("client-key.pem", &client.key_pem, true),
    ];
    for (name, contents, secret) in files {
        write_file(&dir.join(name), contents, secret)?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, secret: bool) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    io::Write::write_all(&mut options.open(path)?, contents.as_bytes())
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// From a minute ago (a clock a little behind still accepts it) for [`DEV_VALIDITY`].
fn valid_from_now() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::minutes(1), now + DEV_VALIDITY)
}
