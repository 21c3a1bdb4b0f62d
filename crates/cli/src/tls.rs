//! The client side of TLS: `--tls-ca`, `--tls-cert` and `--tls-key` (or `JETWAY_TLS_CA`,
//! `JETWAY_TLS_CERT`, `JETWAY_TLS_KEY`) as the SDK's TLS configuration.

use std::path::Path;

use jetway_client::tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::{CliError, args::Cli};

/// The TLS configuration the options ask for, or `None` when they name no file (an https://
/// server then gets the system's roots, as the SDK does).
pub(crate) fn client_config(cli: &Cli) -> Result<Option<ClientTlsConfig>, CliError> {
    if cli.tls_ca.is_none() && cli.tls_cert.is_none() {
        return Ok(None);
    }
    if !cli.server.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "--tls-ca, --tls-cert and --tls-key need an https:// --server, not {:?}",
            cli.server
        )));
    }
    let mut tls = ClientTlsConfig::new();
    tls = match &cli.tls_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        ));
    }
    Ok(Some(tls))
}

fn read(option: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|err| {
        CliError::Usage(format!(
            "{option} {}: cannot read it: {err}",
            path.display()
        ))
    })
}
