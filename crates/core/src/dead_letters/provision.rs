//! Provisioning: the advisory stream and dead-letter streams are made before anything relies on
//! them, and made again if they were deleted.

use async_nats::jetstream::{
    ErrorCode,
    stream::{self, RetentionPolicy},
};

use super::{ADVISORY_MAX_AGE, ADVISORY_STREAM, ADVISORY_SUBJECTS, METADATA_KEY, subjects};
use crate::{
    Error, ErrorKind, Nats,
    error::{Classify, about_consumer},
    streams::DEFAULT_DEDUPE_WINDOW,
};

/// Before a permanent reject: makes sure its dead letter will be made. The termination advisory
/// that JetStream publishes is lost unless the advisory stream captures it, so for a consumer with
/// a dead-letter stream that stream is made again if it was deleted. An error means the reject must
/// not be sent (the event stays in flight); a consumer that no longer exists needs nothing.
pub(crate) async fn prepare_reject(nats: &Nats, stream: &str, consumer: &str) -> Result<(), Error> {
    // Refused at once, as the reject itself would be, instead of waiting out two request timeouts.
    if !nats.is_connected() {
        return Err(Error::unavailable("NATS is not connected"));
    }
    let info = async {
        nats.jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|err| err.classify())?
            .consumer_info(consumer)
            .await
            .map_err(|err| err.classify())
    };
    match info.await {
        Ok(info) if info.config.metadata.contains_key(METADATA_KEY) => {
            ensure_advisory_stream(nats).await
        }
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                err.api_code(),
                Some(ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND)
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Makes what a consumer with a dead-letter stream needs: the advisory stream and the dead-letter
/// stream itself.
pub(crate) async fn prepare(nats: &Nats, dead_letters: &str) -> Result<(), Error> {
    ensure_advisory_stream(nats).await?;
    ensure_dead_letter_stream(nats, dead_letters).await
}

pub(super) async fn ensure_advisory_stream(nats: &Nats) -> Result<(), Error> {
    let config = stream::Config {
        name: ADVISORY_STREAM.to_owned(),
        description: Some(
            "Jetway: consumer advisories waiting to be turned into dead letters".into(),
        ),
        subjects: ADVISORY_SUBJECTS.map(str::to_owned).to_vec(),
        retention: RetentionPolicy::WorkQueue,
        max_age: ADVISORY_MAX_AGE,
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        duplicate_window: DEFAULT_DEDUPE_WINDOW,
        ..Default::default()
    };
    match nats.jetstream().create_stream(config).await {
        Ok(_) => Ok(()),
        Err(err) => match err.classify() {
            // It exists (a create with the same configuration succeeds, so it was changed since).
            e if e.api_code() == Some(ErrorCode::STREAM_NAME_EXIST) => Ok(()),
            e => Err(e),
        },
    }
}

pub(super) async fn ensure_dead_letter_stream(
    nats: &Nats,
    dead_letters: &str,
) -> Result<(), Error> {
    let js = nats.jetstream();
    let config = stream::Config {
        name: dead_letters.to_owned(),
        description: Some("Jetway: dead letters".into()),
        subjects: vec![subjects(dead_letters)],
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        duplicate_window: DEFAULT_DEDUPE_WINDOW,
        ..Default::default()
    };
    let created = match js.create_stream(config).await {
        Ok(_) => true,
        Err(err) => match err.classify() {
            e if e.api_code() == Some(ErrorCode::STREAM_NAME_EXIST) => false,
            e => return Err(about_consumer(e, dead_letters, "")),
        },
    };
    if !created {
        check_dead_letter_stream(nats, dead_letters)
            .await
            .map_err(|err| match err.kind() {
                ErrorKind::Conflict => Error::conflict(format!(
                    "{err}: it does not capture {}",
                    subjects(dead_letters)
                ))
                .with_field("dead_letter_stream"),
                _ => err,
            })?;
    }
    Ok(())
}

/// Checks that a stream exists and is a dead-letter stream.
pub(super) async fn check_dead_letter_stream(nats: &Nats, dead_letters: &str) -> Result<(), Error> {
    let stream = nats
        .jetstream()
        .get_stream(dead_letters)
        .await
        .map_err(|err| about_consumer(err.classify(), dead_letters, ""))?;
    if stream
        .cached_info()
        .config
        .subjects
        .contains(&subjects(dead_letters))
    {
        Ok(())
    } else {
        Err(Error::conflict(format!(
            "dead_letter_stream: stream {dead_letters} is not a dead-letter stream"
        ))
        .with_field("dead_letter_stream"))
    }
}
