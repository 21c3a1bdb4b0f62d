//! `jetway kv get|set|del|watch`: key-value stores with windshift.test.v1.StringValue values.

use futures::StreamExt;
use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{Client, WatchStart};
use serde_json::json;

use crate::{CliError, args::KvCommand, interrupt::Interrupt, output::Output};

/// Runs a `jetway kv` subcommand.
pub(crate) async fn run(
    client: &Client,
    command: KvCommand,
    output: &Output,
) -> Result<(), CliError> {
    match command {
        KvCommand::Get { store, key } => {
            let entry = client.store(store).get(&key).await?;
            output.entry(&key, &entry)?;
        }
        KvCommand::Set {
            store,
            key,
            value,
            create_only,
            revision,
        } => {
            let store = client.store(store);
            // Windshift's EnsureStore leaves an existing store as it is, so this only ever creates.
            store.ensure().await?;
            let value = StringValue { value };
            let revision = match (create_only, revision) {
                (true, _) => store.create(&key, &value).await?,
                (false, Some(revision)) => store.update(&key, &value, revision).await?,
                (false, None) => store.set(&key, &value).await?,
            };
            output.line(
                || format!("{key} set (revision {revision})"),
                || json!({ "key": key, "revision": revision }),
            )?;
        }
        KvCommand::Del {
            store,
            key,
            revision,
        } => {
            let store = client.store(store);
            match revision {
                Some(revision) => store.delete_if_revision(&key, revision).await?,
                None => store.delete(&key).await?,
            }
            output.line(
                || format!("{key} deleted"),
                || json!({ "key": key, "deleted": true }),
            )?;
        }
        KvCommand::Watch {
            store,
            pattern,
            history,
            after,
            count,
        } => {
            let start = match (history, after) {
                (true, _) => WatchStart::AllHistory,
                (false, Some(revision)) => WatchStart::AfterRevision(revision),
                (false, None) => WatchStart::Latest,
            };
            let mut changes = client.store(&store).watch(&pattern, start).await?;
            eprintln!("watching {pattern:?} in {store}");
            let mut interrupt = Interrupt::new();
            let mut seen = 0u64;
            while count.is_none_or(|count| seen < count) {
                let change = tokio::select! {
                    change = changes.next() => change,
                    () = interrupt.recv() => break,
                };
                match change {
                    Some(change) => output.change(&change?)?,
                    None => break,
                }
                seen += 1;
            }
        }
    }
    Ok(())
}
