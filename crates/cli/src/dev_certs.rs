//! `jetway dev-certs <dir>`: a development CA with a server certificate for `localhost` and
//! `127.0.0.1` and a client certificate, and how to use them.

use jetway_client::dev_certs::{DEV_CERT_FILES, write_dev_certs};
use serde_json::json;

use crate::{CliError, args::DevCertsArgs, output::Output};

pub(crate) fn run(args: &DevCertsArgs, output: &Output) -> Result<(), CliError> {
    write_dev_certs(&args.dir, &args.client_name)?;
    let dir = args.dir.display().to_string();
    let files: Vec<String> = DEV_CERT_FILES
        .iter()
        .map(|name| args.dir.join(name).display().to_string())
        .collect();
    output.line(
        || {
            format!(
                "wrote {} in {dir} (development only: the CA's key is next to what it signs)\n\
                 server: TLS_CERT_FILE={dir}/server.pem TLS_KEY_FILE={dir}/server-key.pem \
                 (and TLS_CLIENT_CA_FILE={dir}/ca.pem for mTLS)\n\
                 client: jetway --server https://localhost:8080 --tls-ca {dir}/ca.pem \
                 (and --tls-cert {dir}/client.pem --tls-key {dir}/client-key.pem for mTLS) stream ls",
                DEV_CERT_FILES.join(", ")
            )
        },
        || json!({ "dir": dir, "files": files }),
    )?;
    Ok(())
}
