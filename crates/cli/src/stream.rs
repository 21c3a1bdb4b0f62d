//! `jetway stream ensure`, and the streams that `--create` makes for a new subject, Kafka-style:
//! a subject's first token names a stream capturing `<token>` and `<token>.>`.

use jetway_client::{
    Client, ConsumerOptions, StartPosition, StorageType, StreamOptions, tonic::Code,
};
use serde_json::json;

use crate::{
    CliError,
    args::{Storage, StreamCommand, StreamEnsureArgs, StreamTarget},
    output::Output,
};

/// Runs a `jetway stream` subcommand.
pub async fn run(client: &Client, command: StreamCommand, output: &Output) -> Result<(), CliError> {
    match command {
        StreamCommand::Ensure(args) => ensure(client, args, output).await,
    }
}

async fn ensure(client: &Client, args: StreamEnsureArgs, output: &Output) -> Result<(), CliError> {
    let mut options = StreamOptions::new(&args.name).subjects(&args.subjects);
    if let Some(age) = args.max_age {
        options = options.max_age(age);
    }
    if let Some(count) = args.max_events {
        options = options.max_events(count);
    }
    if let Some(count) = args.max_events_per_subject {
        options = options.max_events_per_subject(count);
    }
    if let Some(bytes) = args.max_bytes {
        options = options.max_bytes(bytes);
    }
    if let Some(bytes) = args.max_event_size {
        options = options.max_event_size(bytes);
    }
    if let Some(storage) = args.storage {
        options = options.storage(match storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        });
    }
    if let Some(replicas) = args.replicas {
        options = options.replicas(replicas);
    }
    if let Some(window) = args.dedup_window {
        options = options.deduplication_window(window);
    }
    client.streams().ensure(&options).await?;
    output.line(
        || {
            format!(
                "stream {} ensured ({})",
                args.name,
                args.subjects.join(", ")
            )
        },
        || json!({ "stream": args.name, "subjects": args.subjects }),
    )?;
    Ok(())
}

/// The stream `--create` uses for `subject`: `--stream`, else the subject's first token.
pub fn name_for(subject: &str, target: &StreamTarget) -> Result<String, CliError> {
    match &target.stream {
        Some(name) => Ok(name.clone()),
        None => first_token(subject).map(str::to_owned),
    }
}

/// The subject's first token, if it can name a stream.
fn first_token(subject: &str) -> Result<&str, CliError> {
    let token = subject.split('.').next().unwrap_or_default();
    let valid = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(token)
    } else {
        Err(CliError::Usage(format!(
            "cannot name a stream after subject {subject:?}: its first token must be letters, digits, _ or -; pass --stream"
        )))
    }
}

/// Creates stream `name` capturing the first token of `subject` and everything below it. Only for
/// a stream known not to exist: ensuring an existing one would replace its subjects and limits.
pub async fn create(client: &Client, name: &str, subject: &str) -> Result<(), CliError> {
    let token = first_token(subject)?;
    let subjects = [token.to_owned(), format!("{token}.>")];
    client
        .streams()
        .ensure(&StreamOptions::new(name).subjects(&subjects))
        .await?;
    eprintln!("created stream {name} for {}", subjects.join(", "));
    Ok(())
}

/// For a subject no stream captures: creates stream `name` for it if no stream of that name
/// exists; if one does, it is left alone and the error says so.
///
/// Whether it exists is learnt by declaring a throwaway consumer on it, since the server cannot
/// list streams yet: NOT_FOUND means there is no such stream.
pub async fn create_missing(client: &Client, name: &str, subject: &str) -> Result<(), CliError> {
    let probe = ConsumerOptions::ephemeral()
        .subject(subject)
        .from(StartPosition::End);
    let exists = |detail: String| {
        CliError::Conflict(format!(
            "stream {name} exists but does not capture {subject}{detail}; add the subject with `jetway stream ensure`"
        ))
    };
    match client.consumers().ensure(name, &probe).await {
        Err(error) if error.is_not_found() => create(client, name, subject).await,
        Ok(id) => {
            // Best effort: an ephemeral consumer removes itself after an hour anyway.
            client.consumers().delete(name, &id).await.ok();
            Err(exists(String::new()))
        }
        Err(error)
            if matches!(
                error.code(),
                Some(Code::InvalidArgument | Code::FailedPrecondition)
            ) =>
        {
            Err(exists(format!(" ({error})")))
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(stream: Option<&str>) -> StreamTarget {
        StreamTarget {
            stream: stream.map(str::to_owned),
            create: true,
        }
    }

    #[test]
    fn streams_are_named_after_the_first_token_unless_given() {
        assert_eq!(name_for("orders.created", &target(None)).unwrap(), "orders");
        assert_eq!(name_for("orders", &target(None)).unwrap(), "orders");
        assert_eq!(
            name_for("orders.created", &target(Some("all"))).unwrap(),
            "all"
        );
        assert!(matches!(
            name_for("*.created", &target(None)),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            name_for(">", &target(None)),
            Err(CliError::Usage(_))
        ));
    }
}
