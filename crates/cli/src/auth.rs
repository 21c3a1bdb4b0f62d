//! `jetway auth`: credentials for the server's AUTH_FILE, made offline so nobody writes a hash by
//! hand. A new token is printed once and never stored; only its hash goes in the file.

use std::io::{self, BufRead};

use jetway_core::credentials;
use serde_json::json;

use crate::{CliError, args::AuthCommand, output::Output};

/// Runs one `jetway auth` command.
pub(crate) fn run(command: &AuthCommand, output: &Output) -> Result<(), CliError> {
    match command {
        AuthCommand::Token { client_id } => {
            let token = credentials::new_token().map_err(|e| io::Error::other(e.to_string()))?;
            let hash = credentials::token_hash(&token);
            output.line(
                || {
                    format!(
                        "token for {client_id} (shown once, keep it secret): {token}\n\
                         add to the \"tokens\" of client \"{client_id}\" in AUTH_FILE: \"{hash}\""
                    )
                },
                || json!({ "client_id": client_id, "token": token, "token_hash": hash }),
            )?;
        }
        AuthCommand::SecretHash => {
            let mut secret = String::new();
            io::stdin().lock().read_line(&mut secret)?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(CliError::Usage(
                    "auth secret-hash: standard input holds no secret".to_owned(),
                ));
            }
            let hash =
                credentials::secret_hash(secret).map_err(|e| io::Error::other(e.to_string()))?;
            output.line(
                || format!("\"secret\": \"{hash}\""),
                || json!({ "secret_hash": hash }),
            )?;
        }
    }
    Ok(())
}
