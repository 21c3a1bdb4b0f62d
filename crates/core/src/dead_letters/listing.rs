//! Listing dead letters, oldest first, filtered by stream and consumer.

use async_nats::jetstream::{self};
use futures::StreamExt;

use super::{DeadLetters, ListSpec, decode, provision::check_dead_letter_stream, subject};
use crate::{
    Error, Nats,
    names::{validate_existing_name, validate_name},
    reads::{Bound, Reader},
    streams::validate_sequence,
};

fn validate_filters(stream: &str, consumer: &str) -> Result<(), Error> {
    if !stream.is_empty() {
        validate_existing_name("stream", stream)?;
    }
    if !consumer.is_empty() {
        validate_existing_name("consumer", consumer)?;
    }
    Ok(())
}

/// Opens a read of the dead letters matching the filters (empty: any).
pub(super) async fn read(
    nats: &Nats,
    dead_letters: &str,
    stream: &str,
    consumer: &str,
    from_id: u64,
    limit: Option<u64>,
) -> Result<Reader, Error> {
    validate_name("dead_letter_stream", dead_letters)?;
    validate_filters(stream, consumer)?;
    validate_sequence("from_id", from_id)?;
    check_dead_letter_stream(nats, dead_letters).await?;
    let any = |name: &str| if name.is_empty() { "*" } else { name }.to_owned();
    let filter = subject(dead_letters, &any(stream), &any(consumer), "*");
    let from = match from_id {
        0 => jetstream::consumer::DeliverPolicy::All,
        start_sequence => jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence },
    };
    Reader::open(nats, dead_letters, from, &filter, Bound::CaughtUp(limit)).await
}

/// ListDeadLetters: the dead letters matching `spec`, oldest first, up to the last one stored now.
pub async fn list(nats: &Nats, spec: &ListSpec) -> Result<DeadLetters, Error> {
    let reader = read(
        nats,
        &spec.dead_letter_stream,
        &spec.stream,
        &spec.consumer,
        spec.from_id,
        spec.limit,
    )
    .await?;
    Ok(futures::stream::unfold(reader, |mut reader| async move {
        loop {
            match reader.next().await? {
                Ok(message) => match decode(message) {
                    Some(dead_letter) => return Some((Ok(dead_letter), reader)),
                    // Something else stored on a dead-letter subject: not a dead letter.
                    None => continue,
                },
                Err(err) => return Some((Err(err), reader)),
            }
        }
    })
    .boxed())
}
