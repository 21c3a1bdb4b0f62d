//! `jetway stream ensure|ls|info|rm|purge`; how the stream behind a subject is found (`--stream`,
//! else the stream whose subjects match it); and the streams that `--create` makes for a new
//! subject, Kafka-style: a subject's first token names a stream capturing `<token>` and
//! `<token>.>`.

use jetway_client::{
    Client, DiscardPolicy, PurgeOptions, Retention, StorageType, StreamConfig, StreamDetails,
    StreamInfo, StreamOptions,
};
use serde_json::{Value, json};

use crate::{
    CliError,
    args::{Storage, StreamCommand, StreamEnsureArgs, StreamTarget},
    output::{self, Output, rfc3339, timestamp},
};

/// Runs a `jetway stream` subcommand.
pub(crate) async fn run(
    client: &Client,
    command: StreamCommand,
    output: &Output,
) -> Result<(), CliError> {
    match command {
        StreamCommand::Ensure(args) => ensure(client, args, output).await,
        StreamCommand::Ls => {
            for stream in client.streams().list().await? {
                output.line(|| summary(&stream), || info_json(&stream))?;
            }
            Ok(())
        }
        StreamCommand::Info { name, subject } => {
            let details = match subject {
                Some(filter) => client.streams().info_filtered(&name, &filter).await?,
                None => client.streams().info(&name).await?,
            };
            output.line(|| details_text(&details), || details_json(&details))?;
            Ok(())
        }
        StreamCommand::Rm { name, force } => {
            if force {
                client.streams().force_delete(&name).await?;
            } else {
                client.streams().delete(&name).await?;
            }
            output.line(
                || format!("stream {name} deleted"),
                || json!({ "stream": name, "deleted": true }),
            )?;
            Ok(())
        }
        StreamCommand::Purge {
            name,
            subject,
            keep,
            force,
        } => {
            let mut options = PurgeOptions::new();
            if force {
                options = options.force();
            }
            if let Some(subject) = &subject {
                options = options.subject(subject);
            }
            if let Some(keep) = keep {
                options = options.keep(keep);
            }
            let purged = client.streams().purge_with(&name, &options).await?;
            output.line(
                || {
                    format!(
                        "purged {} from {name}",
                        output::count(purged, "event", "events")
                    )
                },
                || json!({ "stream": name, "purged": purged }),
            )?;
            Ok(())
        }
    }
}

/// Where a stream's events come from, for a human: its subjects, or what it copies.
fn sources(config: &StreamConfig) -> String {
    match &config.mirror {
        Some(mirror) => format!("mirror of {mirror}"),
        None if !config.sources.is_empty() => format!("aggregate of {}", config.sources.join(", ")),
        None => config.subjects.join(", "),
    }
}

/// One line of `stream ls`.
fn summary(stream: &StreamInfo) -> String {
    format!(
        "{}: {}, {} bytes, {} ({})",
        stream.name,
        output::count(stream.state.events, "event", "events"),
        stream.state.bytes,
        output::count(stream.state.consumer_count.into(), "consumer", "consumers"),
        sources(&stream.config)
    )
}

/// `stream info` for a human: a few indented lines under the name.
fn details_text(details: &StreamDetails) -> String {
    let StreamInfo {
        name,
        config,
        state,
        created,
        ..
    } = &details.info;
    let limits: Vec<String> = [
        config
            .max_age
            .map(|age| format!("max age {}", output::duration(age))),
        config.max_events.map(|n| format!("max events {n}")),
        config
            .max_events_per_subject
            .map(|n| format!("max events per subject {n}")),
        config.max_bytes.map(|n| format!("max bytes {n}")),
        config.max_event_size.map(|n| format!("max event size {n}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let counts: Vec<String> = details
        .subject_counts
        .iter()
        .map(|(subject, count)| format!("{subject} {count}"))
        .collect();
    let mut lines = vec![
        format!("stream {name} ({})", sources(config)),
        format!(
            "  storage: {}, {}, {} retention, discard {}, dedup window {}",
            storage_name(config.storage),
            output::count(config.replicas.into(), "replica", "replicas"),
            retention_name(config.retention),
            discard_name(config.discard),
            output::duration(config.deduplication_window)
        ),
        format!(
            "  limits: {}",
            if limits.is_empty() {
                "none".to_owned()
            } else {
                limits.join(", ")
            }
        ),
        format!(
            "  events: {} ({} bytes), ids {} to {}, {} deleted",
            state.events, state.bytes, state.first_id, state.last_id, state.deleted_count
        ),
        format!(
            "  first: {}, last: {}",
            timestamp(state.first_time),
            timestamp(state.last_time)
        ),
        format!("  consumers: {}", state.consumer_count),
        format!(
            "  subjects: {}{}",
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            },
            if details.subjects_truncated {
                ", ..."
            } else {
                ""
            }
        ),
        format!("  created: {}", timestamp(*created)),
    ];
    if !config.description.is_empty() {
        lines.push(format!("  description: {}", config.description));
    }
    lines.join("\n")
}

fn storage_name(storage: StorageType) -> &'static str {
    match storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

fn retention_name(retention: Retention) -> &'static str {
    match retention {
        Retention::Limits => "limits",
        Retention::Interest => "interest",
        Retention::WorkQueue => "work_queue",
    }
}

fn discard_name(discard: DiscardPolicy) -> &'static str {
    match discard {
        DiscardPolicy::Old => "old",
        DiscardPolicy::New => "new",
    }
}

/// A stream as JSON, durations as the CLI takes them (`7d`) and times in RFC 3339.
fn info_json(stream: &StreamInfo) -> Value {
    let StreamInfo {
        name,
        config,
        state,
        created,
        ..
    } = stream;
    json!({
        "name": name,
        "subjects": config.subjects,
        "mirror": config.mirror,
        "sources": config.sources,
        "retention": retention_name(config.retention),
        "max_age": config.max_age.map(output::duration),
        "max_events": config.max_events,
        "max_events_per_subject": config.max_events_per_subject,
        "max_bytes": config.max_bytes,
        "max_event_size": config.max_event_size,
        "discard": discard_name(config.discard),
        "storage": storage_name(config.storage),
        "replicas": config.replicas,
        "dedup_window": output::duration(config.deduplication_window),
        "description": config.description,
        "created": created.map(rfc3339),
        "events": state.events,
        "bytes": state.bytes,
        "first_id": state.first_id,
        "first_time": state.first_time.map(rfc3339),
        "last_id": state.last_id,
        "last_time": state.last_time.map(rfc3339),
        "consumers": state.consumer_count,
        "subject_count": state.subject_count,
        "deleted": state.deleted_count,
    })
}

fn details_json(details: &StreamDetails) -> Value {
    let mut object = info_json(&details.info);
    object["subject_counts"] = json!(details.subject_counts);
    object["subjects_truncated"] = json!(details.subjects_truncated);
    object
}

/// The stream that holds `subject`'s events: `--stream`, else the one stream whose subjects
/// overlap it. When none does, `--create` makes one (see [`create_missing`]); without it the
/// error says how to go on.
pub(crate) async fn resolve(
    client: &Client,
    subject: &str,
    target: &StreamTarget,
) -> Result<String, CliError> {
    if let Some(name) = &target.stream {
        return Ok(name.clone());
    }
    let mut found = client.streams().for_subject(subject).await?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if target.create => {
            let name = name_for(subject, target)?;
            create_missing(client, &name, subject).await?;
            Ok(name)
        }
        0 => Err(CliError::Conflict(format!(
            "no stream captures {subject}; pass --create to make one, or --stream"
        ))),
        _ => Err(CliError::Usage(format!(
            "{subject} matches the subjects of several streams ({}); pass --stream",
            found.join(", ")
        ))),
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
pub(crate) fn name_for(subject: &str, target: &StreamTarget) -> Result<String, CliError> {
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
pub(crate) async fn create(client: &Client, name: &str, subject: &str) -> Result<(), CliError> {
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
pub(crate) async fn create_missing(
    client: &Client,
    name: &str,
    subject: &str,
) -> Result<(), CliError> {
    match client.streams().info(name).await {
        Err(error) if error.is_not_found() => create(client, name, subject).await,
        Ok(_) => Err(CliError::Conflict(format!(
            "stream {name} exists but does not capture {subject}; add the subject with `jetway stream ensure`"
        ))),
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
