//! `jetway publish`: one message from `-m`, or one per line of standard input, with progress on
//! standard error.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{Client, PublishOptions};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::{CliError, args::PublishArgs, output::Output, stream};

/// The longest line read from standard input, in bytes: more than a server accepts in one event
/// by default (1 MiB), so any line the server could store gets through, and nothing unbounded is
/// held in memory.
const MAX_LINE: u64 = 1024 * 1024;

/// How often the progress line on a terminal is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Runs `jetway publish`.
pub async fn run(client: &Client, args: PublishArgs, output: &Output) -> Result<(), CliError> {
    let mut publisher = Publisher {
        client,
        args: &args,
        created: false,
    };
    match &args.message {
        Some(message) => {
            let id = publisher.publish(message, args.key.clone()).await?;
            output.line(
                || format!("published {} #{id}", args.subject),
                || json!({ "id": id, "subject": args.subject }),
            )?;
        }
        None => publish_lines(&mut publisher, output).await?,
    }
    Ok(())
}

struct Publisher<'a> {
    client: &'a Client,
    args: &'a PublishArgs,
    /// Whether `--create` already made the stream, so it is tried once.
    created: bool,
}

impl Publisher<'_> {
    /// Publishes one StringValue; with `--create`, first makes the stream if no stream captures
    /// the subject.
    async fn publish(&mut self, value: &str, key: Option<String>) -> Result<u64, CliError> {
        let subject = &self.args.subject;
        let message = StringValue {
            value: value.to_owned(),
        };
        let options = match key {
            Some(key) => PublishOptions::new().idempotency_key(key),
            None => PublishOptions::new(),
        };
        match self.client.publish_with(subject, &message, &options).await {
            Err(error) if error.is_not_found() && self.args.target.create && !self.created => {
                let name = stream::name_for(subject, &self.args.target)?;
                stream::create_missing(self.client, &name, subject).await?;
                self.created = true;
                Ok(self
                    .client
                    .publish_with(subject, &message, &options)
                    .await?)
            }
            result => Ok(result?),
        }
    }
}

/// Publishes each non-empty line of standard input, in order. Line N's key is `<key>-<N>`, so
/// publishing the same input again stores nothing twice.
async fn publish_lines(publisher: &mut Publisher<'_>, output: &Output) -> Result<(), CliError> {
    let mut input = BufReader::new(tokio::io::stdin());
    let mut progress = Progress::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = (&mut input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.len() as u64 > MAX_LINE {
            return Err(CliError::Usage(format!(
                "line {number} of standard input is longer than {MAX_LINE} bytes"
            )));
        }
        let text = String::from_utf8(std::mem::take(&mut line)).map_err(|_| {
            CliError::Usage(format!("line {number} of standard input is not UTF-8"))
        })?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            continue;
        }
        let key = publisher
            .args
            .key
            .as_ref()
            .map(|key| format!("{key}-{number}"));
        let id = publisher.publish(text, key).await?;
        if output.is_json() {
            output.line(
                String::new,
                || json!({ "id": id, "subject": publisher.args.subject, "line": number }),
            )?;
        }
        progress.published();
    }
    progress.finish(&publisher.args.subject);
    Ok(())
}

/// Progress on standard error: a line redrawn in place on a terminal, and a summary at the end.
struct Progress {
    count: u64,
    terminal: bool,
    last_drawn: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            count: 0,
            terminal: std::io::stderr().is_terminal(),
            last_drawn: Instant::now(),
        }
    }

    fn published(&mut self) {
        self.count += 1;
        if self.terminal && self.last_drawn.elapsed() >= PROGRESS_EVERY {
            self.last_drawn = Instant::now();
            let mut stderr = std::io::stderr().lock();
            // Progress is a courtesy: a failed write to stderr must not fail the publish.
            let _ = write!(stderr, "\rpublished {}", self.count);
            let _ = stderr.flush();
        }
    }

    fn finish(&self, subject: &str) {
        // On a terminal, replace the progress line (carriage return, then erase the line).
        let clear = if self.terminal { "\r\x1b[2K" } else { "" };
        eprintln!("{clear}published {} events to {subject}", self.count);
    }
}
