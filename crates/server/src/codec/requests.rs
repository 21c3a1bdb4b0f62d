//! `jetway.requests.v1` messages to and from `jetway-core`: requests and their answers, processor
//! declarations, the requests handed to processors and the processors' answers. A client input with
//! no core equivalent (a negative timeout, a status code outside the allowed set, a message without
//! its oneof) is rejected here, naming the field.

use std::time::Duration;

use jetway_api::jetway::requests::v1::{
    self as api, answer::Result as AnswerResult, request_response::Answer as ResponseAnswer,
};
use jetway_core::{
    Error,
    requests::{Answer, Failure, Incoming, Payload, ProcessorSpec, RequestSpec},
    telemetry::TraceContext,
};
use tonic::{Code, Status, metadata::MetadataMap};

use crate::codec::windshift;

/// The codes a processor may fail a request with; the others belong to gRPC itself (OK,
/// CANCELLED, DEADLINE_EXCEEDED) or promise what a processor cannot know (DATA_LOSS).
const ALLOWED_CODES: [Code; 13] = [
    Code::Unknown,
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::Unauthenticated,
];

/// The code of `number`, if a processor may send it.
fn allowed(number: i32) -> Option<Code> {
    let code = Code::from_i32(number);
    (i32::from(code) == number && ALLOWED_CODES.contains(&code)).then_some(code)
}

/// The call's deadline, from its `grpc-timeout` header (`<digits><unit>`, unit one of H M S m u n).
pub(crate) fn deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How much sooner than the call's deadline a request gives up, at most: tonic cancels a call whose
/// deadline passes ("Timeout expired", CANCELLED), so the request's own DEADLINE_EXCEEDED, which
/// says what it waited for, must be sent before. A tenth of shorter deadlines.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// A request to send. It waits for the shorter of its `timeout` and the call's `deadline` (less the
/// margin).
pub(crate) fn request_spec(
    request: api::RequestRequest,
    deadline: Option<Duration>,
    trace: TraceContext,
) -> Result<RequestSpec, Error> {
    let timeout = windshift::optional_duration("timeout", request.timeout.as_ref())?;
    if timeout == Some(Duration::ZERO) {
        return Err(Error::invalid(
            "timeout",
            "must be positive; leave it out for the default",
        ));
    }
    let deadline = deadline.map(|deadline| deadline - DEADLINE_MARGIN.min(deadline / 10));
    let timeout = match (timeout, deadline) {
        (Some(timeout), Some(deadline)) => Some(timeout.min(deadline)),
        (timeout, deadline) => timeout.or(deadline),
    };
    Ok(RequestSpec {
        subject: request.subject,
        payload: Payload {
            data: request.data,
            content_type: request.content_type,
            headers: request.headers.into_iter().collect(),
        },
        timeout,
        trace,
    })
}

/// The answer to a Request call: a reply, no content, or the processor's status.
pub(crate) fn encode_answer(answer: Answer) -> Result<api::RequestResponse, Status> {
    let answer = match answer {
        Answer::Reply(payload) => ResponseAnswer::Reply(encode_reply(payload)),
        Answer::NoContent => ResponseAnswer::NoContent(api::NoContent {}),
        Answer::Failed(failure) => return Err(failure_status(failure)),
    };
    Ok(api::RequestResponse {
        answer: Some(answer),
    })
}

/// A processor's failure as the requester's status. Jetway processors send a code from
/// [`ALLOWED_CODES`]; another NATS service's code (often HTTP-like, 400 or 500) becomes UNKNOWN,
/// with the code in the message.
pub(crate) fn failure_status(failure: Failure) -> Status {
    if let Some(code) = allowed(i32::from(failure.code)) {
        Status::new(code, failure.message)
    } else {
        Status::unknown(format!(
            "the responder failed with code {}: {}",
            failure.code, failure.message
        ))
    }
}

fn encode_reply(payload: Payload) -> api::Reply {
    api::Reply {
        data: payload.data,
        content_type: payload.content_type,
        headers: payload.headers.into_iter().collect(),
    }
}

/// A processor's declaration.
pub(crate) fn processor_spec(attach: api::Attach) -> ProcessorSpec {
    ProcessorSpec {
        subjects: attach.subjects,
        queue_group: attach.queue_group,
        max_in_flight: attach.max_in_flight,
    }
}

/// A processor's answer: the id it answers, and what.
pub(crate) fn answer(answer: api::Answer) -> Result<(u64, Answer), Error> {
    let result = match answer.result {
        Some(AnswerResult::Reply(reply)) => Answer::Reply(Payload {
            data: reply.data,
            content_type: reply.content_type,
            headers: reply.headers.into_iter().collect(),
        }),
        Some(AnswerResult::NoContent(_)) => Answer::NoContent,
        Some(AnswerResult::Error(error)) => {
            if allowed(error.code).is_none() {
                return Err(Error::invalid(
                    "answer.error.code",
                    format!(
                        "{} is not one of the allowed codes (2, 3, 5 to 14, 16)",
                        error.code
                    ),
                ));
            }
            Answer::Failed(Failure {
                code: u16::try_from(error.code).unwrap_or_default(),
                message: error.message,
            })
        }
        None => {
            return Err(Error::invalid(
                "answer.result",
                "set one of reply, no_content or error",
            ));
        }
    };
    Ok((answer.id, result))
}

/// A request for a processor.
pub(crate) fn incoming(request: Incoming) -> api::IncomingRequest {
    api::IncomingRequest {
        id: request.id,
        subject: request.subject,
        data: request.payload.data,
        content_type: request.payload.content_type,
        headers: request.payload.headers.into_iter().collect(),
        timeout: request.timeout.map(Into::into),
        trace_parent: request.trace.parent,
        trace_state: request.trace.state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let deadline_of = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            deadline(&metadata)
        };
        assert_eq!(deadline_of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline_of("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(deadline_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(deadline_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(deadline_of("x"), None);
        assert_eq!(deadline(&MetadataMap::new()), None);
    }

    #[test]
    fn the_shorter_of_timeout_and_deadline_wins() {
        let request = |seconds: Option<u64>| api::RequestRequest {
            subject: "svc".into(),
            timeout: seconds.map(|s| Duration::from_secs(s).into()),
            ..Default::default()
        };
        let timeout = |seconds, deadline: Option<u64>| {
            request_spec(
                request(seconds),
                deadline.map(Duration::from_secs),
                TraceContext::default(),
            )
            .unwrap()
            .timeout
        };
        let five = Duration::from_secs(5) - DEADLINE_MARGIN;
        assert_eq!(timeout(Some(3), Some(5)), Some(Duration::from_secs(3)));
        assert_eq!(timeout(Some(9), Some(5)), Some(five));
        assert_eq!(timeout(None, Some(5)), Some(five));
        assert_eq!(timeout(Some(3), None), Some(Duration::from_secs(3)));
        assert_eq!(timeout(None, None), None);
        let zero = request_spec(request(Some(0)), None, TraceContext::default()).unwrap_err();
        assert_eq!(zero.field(), Some("timeout"));
    }

    #[test]
    fn only_allowed_codes_pass_from_processors() {
        let error = |code| api::Answer {
            id: 1,
            result: Some(AnswerResult::Error(api::AnswerError {
                code,
                message: "m".into(),
            })),
        };
        assert!(answer(error(5)).is_ok());
        for code in [0, 1, 4, 15, 17, -3] {
            let err = answer(error(code)).unwrap_err();
            assert_eq!(err.field(), Some("answer.error.code"), "code {code}");
        }
        let status = failure_status(Failure {
            code: 500,
            message: "boom".into(),
        });
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(status.message(), "the responder failed with code 500: boom");
        let status = failure_status(Failure {
            code: 5,
            message: "no such order".into(),
        });
        assert_eq!(status.code(), Code::NotFound);
    }
}
