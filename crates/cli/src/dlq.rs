//! `jetway dlq ls|redrive`: the dead letters of one dead-letter stream (`--dlq`), or of every
//! dead-letter stream Jetway made, which the stream listing tells apart by their subjects.

use futures::StreamExt;
use jetway_client::{Client, DeadLetterListOptions, RedriveOptions, RedriveOutcome};
use serde_json::json;

use crate::{
    CliError,
    args::{DlqCommand, DlqLsArgs, DlqRedriveArgs},
    output::Output,
};

/// The most dead letters the server redrives in one call.
const REDRIVE_BATCH: u32 = 1000;

/// Runs a `jetway dlq` subcommand.
pub(crate) async fn run(
    client: &Client,
    command: DlqCommand,
    output: &Output,
) -> Result<(), CliError> {
    match command {
        DlqCommand::Ls(args) => list(client, args, output).await,
        DlqCommand::Redrive(args) => redrive(client, args, output).await,
    }
}

/// `--dlq`, else every dead-letter stream, by name.
async fn dead_letter_streams(
    client: &Client,
    dlq: Option<String>,
) -> Result<Vec<String>, CliError> {
    if let Some(name) = dlq {
        return Ok(vec![name]);
    }
    let streams = client.streams().list().await?;
    let names: Vec<String> = streams
        .into_iter()
        .filter(|stream| stream.is_dead_letter_stream())
        .map(|stream| stream.name)
        .collect();
    if names.is_empty() {
        return Err(CliError::Conflict(
            "there are no dead-letter streams (a consumer gets one with `consume --dead-letter`)"
                .into(),
        ));
    }
    Ok(names)
}

async fn list(client: &Client, args: DlqLsArgs, output: &Output) -> Result<(), CliError> {
    let mut options = DeadLetterListOptions::new();
    if let Some(stream) = &args.stream {
        options = options.stream(stream);
    }
    if let Some(consumer) = &args.consumer {
        options = options.consumer(consumer);
    }
    if let Some(limit) = args.limit {
        options = options.limit(limit);
    }
    for name in dead_letter_streams(client, args.dlq).await? {
        let mut letters = client.dead_letters(&name).list_with(&options).await?;
        while let Some(letter) = letters.next().await {
            output.dead_letter(&name, &letter?)?;
        }
    }
    Ok(())
}

async fn redrive(client: &Client, args: DlqRedriveArgs, output: &Output) -> Result<(), CliError> {
    let names = dead_letter_streams(client, args.dlq.clone()).await?;
    let mut failed = 0;
    if args.all {
        for name in &names {
            failed += redrive_all(client, name, &args, output).await?;
        }
    } else {
        // Ids belong to one dead-letter stream.
        let [name] = names.as_slice() else {
            return Err(CliError::Usage(format!(
                "there are several dead-letter streams ({}); pass --dlq",
                names.join(", ")
            )));
        };
        let outcome = client.dead_letters(name).redrive(&args.ids).await?;
        failed += report(name, &outcome, output)?;
    }
    if failed > 0 {
        return Err(CliError::Conflict(format!(
            "{failed} dead letters could not be published now (no stream captures their subjects?); they stay, redrive them again later"
        )));
    }
    Ok(())
}

/// Redrives every dead letter of `name` (narrowed by the arguments), a batch per call, and
/// returns how many failed.
async fn redrive_all(
    client: &Client,
    name: &str,
    args: &DlqRedriveArgs,
    output: &Output,
) -> Result<usize, CliError> {
    let dead_letters = client.dead_letters(name);
    let mut remaining = args.limit;
    let mut failed = 0;
    loop {
        let batch = remaining.map_or(REDRIVE_BATCH, |left| left.min(REDRIVE_BATCH));
        if batch == 0 {
            return Ok(failed);
        }
        let mut options = RedriveOptions::new().limit(batch);
        if let Some(stream) = &args.stream {
            options = options.stream(stream);
        }
        if let Some(consumer) = &args.consumer {
            options = options.consumer(consumer);
        }
        let outcome = dead_letters.redrive_all(&options).await?;
        failed += report(name, &outcome, output)?;
        let done = u32::try_from(outcome.redriven.len()).unwrap_or(u32::MAX);
        remaining = remaining.map(|left| left.saturating_sub(done));
        // A short batch means nothing more was there when the call started; a failure would be
        // picked up again by the next call, so stop there too.
        if done < batch || !outcome.temporary_failed_ids.is_empty() {
            return Ok(failed);
        }
    }
}

/// Prints what happened to each dead letter, and returns how many could not be published.
fn report(name: &str, outcome: &RedriveOutcome, output: &Output) -> Result<usize, CliError> {
    for redriven in &outcome.redriven {
        output.line(
            || format!("{name} {} redriven as #{}", redriven.id, redriven.event_id),
            || {
                json!({
                    "dead_letter_stream": name,
                    "id": redriven.id,
                    "status": "redriven",
                    "event_id": redriven.event_id,
                })
            },
        )?;
    }
    for id in &outcome.invalid_ids {
        output.line(
            || format!("{name} {id} not found (already redriven?)"),
            || json!({ "dead_letter_stream": name, "id": id, "status": "not_found" }),
        )?;
    }
    for id in &outcome.temporary_failed_ids {
        output.line(
            || format!("{name} {id} not published; it stays"),
            || json!({ "dead_letter_stream": name, "id": id, "status": "failed" }),
        )?;
    }
    Ok(outcome.temporary_failed_ids.len())
}
