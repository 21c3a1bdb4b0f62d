//! `jetway`, the command line for a Jetway server: manage streams, publish, consume, read, tail,
//! list and redrive dead letters, read and write key-value stores, and send and answer requests.
//!
//! Exit codes: 0 success, 1 a usage error (bad arguments or input), 2 an error from the server or
//! the connection. Every error is one line on standard error.

mod args;
mod auth;
mod consume;
mod dev_certs;
mod dlq;
mod interrupt;
mod kv;
mod output;
mod publish;
mod read;
mod requests;
mod stream;
mod tls;

use std::{io, process::ExitCode};

use clap::{Parser, error::ErrorKind};
use jetway_client::Client;

use crate::{
    args::{Cli, Command},
    output::Output,
};

/// Why a command failed; [`CliError::exit_code`] maps it to the process's exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or the input cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The server refused, or could not be reached.
    #[error(transparent)]
    Server(#[from] jetway_client::Error),
    /// The server's state does not allow the command (e.g. no stream captures the subject, or a
    /// stream exists but does not capture it).
    #[error("{0}")]
    Conflict(String),
    /// Reading standard input or writing standard output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(1),
            CliError::Server(_) | CliError::Conflict(_) | CliError::Io(_) => ExitCode::from(2),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`jetway consume ... | head`): nothing is wrong.
        Err(CliError::Io(error)) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&describe(&error)));
            error.exit_code()
        }
    }
}

/// Prints help or the version as clap does; any other clap error becomes one line and exit code 1
/// (clap's own default is 2, which here means a server error).
fn usage_error(error: clap::Error) -> ExitCode {
    let message = match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        // clap renders the whole help for this one; a line is what the CLI promises.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "a subcommand is required".to_owned()
        }
        // clap's first paragraph is the message (a list of missing arguments continues on the
        // next lines); usage and tips follow after a blank line.
        _ => {
            let rendered = error.to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .skip_while(|line| line.trim().is_empty())
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = paragraph.join(" ");
            match message.strip_prefix("error: ") {
                Some(rest) => rest.to_owned(),
                None if message.is_empty() => "invalid arguments".to_owned(),
                None => message,
            }
        }
    };
    eprintln!("error: {message} (see jetway --help)");
    ExitCode::from(1)
}

/// The error's message, and for a status the transport made up (a failed TLS handshake, say) the
/// causes that say what happened: "transport error" alone does not.
fn describe(error: &CliError) -> String {
    let mut message = error.to_string();
    if let CliError::Server(jetway_client::Error::Status(status)) = error {
        let mut cause = std::error::Error::source(status.as_ref());
        while let Some(error) = cause {
            let text = error.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = error.source();
        }
    }
    message
}

/// Messages from the server can span lines; the CLI promises one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let output = Output::new(cli.json);
    if let Command::Auth(command) = &cli.command {
        return auth::run(command, &output);
    }
    if let Command::DevCerts(args) = &cli.command {
        return dev_certs::run(args, &output);
    }
    let mut builder = Client::builder();
    if let Some(token) = &cli.token {
        builder = builder.auth_token(token);
    }
    if let Some(tls) = tls::client_config(&cli)? {
        builder = builder.tls(tls);
    }
    let client = builder.connect(cli.server).await?;
    match cli.command {
        Command::DevCerts(_) => Ok(()),
        Command::Stream(command) => stream::run(&client, command, &output).await,
        Command::Publish(args) => publish::run(&client, args, &output).await,
        Command::Consume(args) => consume::consume(&client, args, &output).await,
        Command::Read(args) => read::run(&client, args, &output).await,
        Command::Tail(args) => consume::tail(&client, args, &output).await,
        Command::Dlq(command) => dlq::run(&client, command, &output).await,
        Command::Kv(command) => kv::run(&client, command, &output).await,
        // Answered above, without a connection.
        Command::Auth(command) => auth::run(&command, &output),
        Command::Request(args) => requests::request(&client, args, &output).await,
        Command::Reply(args) => requests::reply(&client, args, &output).await,
    }
}
