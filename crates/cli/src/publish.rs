//! `jetway publish`: one message from `-m`, or one per line of standard input, with progress on
//! standard error. A message is a windshift.test.v1.StringValue, or with `--raw` the bytes as
//! they are, with `--content-type`; `--header` adds custom headers to every event.

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
pub(crate) async fn run(
    client: &Client,
    args: PublishArgs,
    output: &Output,
) -> Result<(), CliError> {
    let mut base = PublishOptions::new();
    for (name, value) in &args.headers {
        base = base.header(name, value);
    }
    let mut publisher = Publisher {
        client,
        args: &args,
        base,
        created: false,
    };
    match &args.message {
        Some(message) => {
            let body = if args.raw {
                Body::Raw(message.clone().into_bytes())
            } else {
                Body::Text(message.clone())
            };
            let id = publisher.publish(body, args.key.clone()).await?;
            output.line(
                || format!("published {} #{id}", args.subject),
                || json!({ "id": id, "subject": args.subject }),
            )?;
        }
        None => publish_lines(&mut publisher, output).await?,
    }
    Ok(())
}

/// One event's body.
enum Body {
    /// Published as a StringValue.
    Text(String),
    /// Published as raw bytes (`--raw`).
    Raw(Vec<u8>),
}

struct Publisher<'a> {
    client: &'a Client,
    args: &'a PublishArgs,
    /// The options every event gets: the `--header`s.
    base: PublishOptions,
    /// Whether `--create` already made the stream, so it is tried once.
    created: bool,
}

impl Publisher<'_> {
    /// Publishes one event; with `--create`, first makes the stream if no stream captures the
    /// subject.
    async fn publish(&mut self, body: Body, key: Option<String>) -> Result<u64, CliError> {
        let subject = &self.args.subject;
        let options = match key {
            Some(key) => self.base.clone().idempotency_key(key),
            None => self.base.clone(),
        };
        match self.send(&body, &options).await {
            Err(error) if error.is_not_found() && self.args.target.create && !self.created => {
                let name = stream::name_for(subject, &self.args.target)?;
                stream::create_missing(self.client, &name, subject).await?;
                self.created = true;
                Ok(self.send(&body, &options).await?)
            }
            // For a publish, NOT_FOUND means that no stream captures the subject.
            Err(error) if error.is_not_found() && !self.args.target.create => Err(
                CliError::Conflict(format!("{error}; pass --create to make a stream for it")),
            ),
            result => Ok(result?),
        }
    }

    async fn send(
        &self,
        body: &Body,
        options: &PublishOptions,
    ) -> Result<u64, jetway_client::Error> {
        let subject = &self.args.subject;
        match body {
            Body::Text(value) => {
                let message = StringValue {
                    value: value.clone(),
                };
                self.client.publish_with(subject, &message, options).await
            }
            Body::Raw(data) => {
                let content_type = self.args.content_type.as_deref().unwrap_or_default();
                self.client
                    .publish_bytes(subject, data.clone(), content_type, options)
                    .await
            }
        }
    }
}

/// Publishes each non-empty line of standard input, in order (with `--raw`, as bytes, which need
/// not be UTF-8). Line N's key is `<key>-<N>`, so publishing the same input again stores nothing
/// twice.
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
        let mut bytes = std::mem::take(&mut line);
        for end in [b'\n', b'\r'] {
            if bytes.last() == Some(&end) {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            continue;
        }
        let body = if publisher.args.raw {
            Body::Raw(bytes)
        } else {
            Body::Text(String::from_utf8(bytes).map_err(|_| {
                CliError::Usage(format!("line {number} of standard input is not UTF-8"))
            })?)
        };
        let key = publisher
            .args
            .key
            .as_ref()
            .map(|key| format!("{key}-{number}"));
        let id = publisher.publish(body, key).await?;
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
