//! Redrive: dead letters published again on their original subjects, then removed.

use std::collections::HashSet;

use async_nats::jetstream::{
    ErrorCode,
    message::{PublishMessage, StreamMessage},
    stream::LastRawMessageErrorKind,
};

use super::{
    H_SUBJECT, MAX_REDRIVE, Redriven, Selection, forwardable, listing::read,
    provision::check_dead_letter_stream,
};
use crate::{Error, ErrorKind, Nats, error::Classify, format, names::validate_name, publish};

/// RedriveDeadLetters: publishes the selected dead letters again on their original subjects and
/// removes them from the dead-letter stream. Stops at the first NATS failure (a retry is safe).
pub async fn redrive(
    nats: &Nats,
    dead_letters: &str,
    selection: &Selection,
) -> Result<Redriven, Error> {
    let mut result = Redriven::default();
    match selection {
        Selection::Ids(ids) => {
            validate_name("dead_letter_stream", dead_letters)?;
            if ids.is_empty() {
                return Err(Error::invalid("ids", "list ids, or set all"));
            }
            if ids.len() > MAX_REDRIVE as usize {
                return Err(Error::invalid(
                    "ids",
                    format!("must list at most {MAX_REDRIVE}"),
                ));
            }
            check_dead_letter_stream(nats, dead_letters).await?;
            let stream = nats
                .jetstream()
                .get_stream_no_info(dead_letters)
                .await
                .map_err(|err| err.classify())?;
            let mut seen = HashSet::new();
            for &id in ids {
                if !seen.insert(id) || id == 0 {
                    result.invalid_ids.push(id);
                    continue;
                }
                match stream.get_raw_message(id).await {
                    Ok(message) => redrive_one(nats, dead_letters, message, &mut result).await?,
                    Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        result.invalid_ids.push(id);
                    }
                    Err(err) => return Err(err.classify()),
                }
            }
        }
        Selection::All {
            stream,
            consumer,
            limit,
        } => {
            if *limit > MAX_REDRIVE {
                return Err(Error::invalid(
                    "limit",
                    format!("must be at most {MAX_REDRIVE}"),
                ));
            }
            let limit = match limit {
                0 => MAX_REDRIVE,
                n => *n,
            };
            let mut reader =
                read(nats, dead_letters, stream, consumer, 0, Some(limit.into())).await?;
            while let Some(message) = reader.next().await {
                redrive_one(nats, dead_letters, message?, &mut result).await?;
            }
        }
    }
    Ok(result)
}

/// Redrives one message of the dead-letter stream, recording the outcome in `result`.
async fn redrive_one(
    nats: &Nats,
    dead_letters: &str,
    message: StreamMessage,
    result: &mut Redriven,
) -> Result<(), Error> {
    let id = message.sequence;
    let Some(subject) = message
        .headers
        .get(H_SUBJECT)
        .map(|s| s.as_str().to_owned())
    else {
        result.invalid_ids.push(id);
        return Ok(());
    };
    let headers = forwardable(&message.headers);
    let size = message.payload.len() + format::header_size(&headers);
    let publication = PublishMessage::build()
        .payload(message.payload)
        .headers(headers)
        .message_id(format!("jetway-redrive:{dead_letters}:{id}"));
    let published = match nats
        .jetstream()
        .send_publish(subject.clone(), publication)
        .await
    {
        Ok(ack) => ack.await,
        Err(err) => Err(err),
    };
    let event_id = match published {
        Ok(ack) => ack.sequence,
        Err(err) => {
            let err = publish::classify(nats, err, &subject, None, size).await;
            return match err.kind() {
                // No stream takes it now, it is too large for the one that does, or that one is
                // full: it stays a dead letter.
                ErrorKind::NotFound | ErrorKind::Invalid | ErrorKind::LimitReached => {
                    tracing::warn!(%err, id, %dead_letters, "cannot redrive a dead letter");
                    result.temporary_failed_ids.push(id);
                    Ok(())
                }
                // It may have been stored; redriving again is safe, as each dead letter is
                // published under the same message id every time.
                ErrorKind::TimedOut => Err(Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "JetStream did not acknowledge the redriven event {id} in time; redrive again"
                    ),
                )),
                _ => Err(err),
            };
        }
    };
    let stream = nats
        .jetstream()
        .get_stream_no_info(dead_letters)
        .await
        .map_err(|err| err.classify())?;
    match stream.delete_message(id).await {
        Ok(_) => {}
        // Removed meanwhile (a concurrent redrive of the same dead letter).
        Err(err) if err.classify().api_code() == Some(ErrorCode::NO_MESSAGE_FOUND) => {}
        Err(err) => return Err(err.classify()),
    }
    tracing::info!(id, event_id, %subject, %dead_letters, "dead letter redriven");
    result.redriven.push((id, event_id));
    Ok(())
}
