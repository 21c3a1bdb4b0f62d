//! `jetway request` and `jetway reply`: request/reply over NATS through Jetway. `request` prints the
//! answer's payload (or nothing, for "no content"); a request nothing answers in time fails with
//! exit code 2 and the server's one-line reason. `reply` serves subjects until stopped, echoing each
//! request or answering with a shell command's output, and prints a line per request.

use std::{io::Write, process::Stdio, sync::Arc};

use jetway_client::{Answer, Client, Failure, Message, Request, ServeOptions, tonic::Code};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::{
    CliError,
    args::{ReplyArgs, RequestArgs},
    interrupt::Interrupt,
    output::Output,
};

/// The longest failure message a processor may send (the server refuses longer ones).
const MAX_FAILURE_MESSAGE: usize = 1024;

/// Runs `jetway request`.
pub(crate) async fn request(
    client: &Client,
    args: RequestArgs,
    output: &Output,
) -> Result<(), CliError> {
    let mut message = Message::new(args.message.unwrap_or_default());
    if let Some(content_type) = args.content_type {
        message = message.content_type(content_type);
    }
    for (name, value) in args.headers {
        message = message.header(name, value);
    }
    match client
        .request_with(args.subject, message, Some(args.timeout))
        .await?
    {
        Answer::Reply(reply) => output.line(
            || String::from_utf8_lossy(&reply.data).into_owned(),
            || {
                json!({
                    "data": String::from_utf8_lossy(&reply.data),
                    "contentType": reply.content_type,
                    "headers": reply.headers,
                })
            },
        )?,
        Answer::NoContent => {
            if output.is_json() {
                output.line(String::new, || json!({"noContent": true}))?;
            }
        }
    }
    Ok(())
}

/// Runs `jetway reply` until Ctrl-C or SIGTERM.
pub(crate) async fn reply(
    client: &Client,
    args: ReplyArgs,
    output: &Output,
) -> Result<(), CliError> {
    let mut options = ServeOptions::new(args.subjects).concurrency(args.concurrency);
    if let Some(queue) = args.queue {
        options = options.queue_group(queue);
    }
    let command = args.command.map(Arc::new);
    let json = output.is_json();
    let handler = move |request: Request| {
        let command = command.clone();
        async move {
            let subject = request.subject.clone();
            let size = request.message.data.len();
            let answer = match command {
                Some(command) => run_command(&command, request).await,
                None => Ok(Answer::Reply(request.message)),
            };
            // Printed from the handler's task: one whole line each, as `Output::line` does.
            let status = match &answer {
                Ok(_) => "answered".to_owned(),
                Err(failure) => format!("failed: {}", failure.message),
            };
            let line = if json {
                json!({"subject": subject, "bytes": size, "result": status}).to_string()
            } else {
                format!("{subject} ({size} bytes): {status}")
            };
            // A reader that went away (`| head`) does not stop the serving.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
            answer
        }
    };
    let mut interrupt = Interrupt::new();
    tokio::select! {
        served = client.serve(options, handler) => served.map_err(CliError::from),
        () = interrupt.recv() => Ok(()),
    }
}

/// Runs `command` with the request's payload on standard input; its standard output is the reply.
/// A command that cannot start or exits unsuccessfully fails the request with UNKNOWN and the last
/// line of its standard error.
async fn run_command(command: &str, request: Request) -> Result<Answer, Failure> {
    let failed = |reason: String| {
        // The server takes no control characters in a status message.
        let mut reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if reason.len() > MAX_FAILURE_MESSAGE {
            let mut end = MAX_FAILURE_MESSAGE;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Failure::new(Code::Unknown, reason)
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("JETWAY_SUBJECT", &request.subject)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| failed(format!("cannot run the command: {err}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe early; that is not a failure.
        stdin.write_all(&request.message.data).await.ok();
    }
    let done = child
        .wait_with_output()
        .await
        .map_err(|err| failed(format!("the command failed: {err}")))?;
    if !done.status.success() {
        let stderr = String::from_utf8_lossy(&done.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
        return Err(failed(format!(
            "the command failed ({}){}",
            done.status,
            last.map(|line| format!(": {}", line.trim()))
                .unwrap_or_default()
        )));
    }
    Ok(Answer::Reply(Message::new(done.stdout)))
}
