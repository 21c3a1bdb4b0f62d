//! gzip on the HTTP API, both ways.
//!
//! Responses ([`compress`]): an answer of at least [`MIN_BYTES`] (or of unknown length, such as a
//! streamed range read) is gzip-compressed when the request's `Accept-Encoding` takes gzip. A
//! streamed body is compressed as it goes: whatever was compressed is flushed whenever the
//! handler has nothing more ready, so a client still sees each event as soon as it is read.
//! Server-Sent Events are never compressed: a compressor per subscriber would hold hundreds of
//! KiB for as long as the stream lives, and some proxies buffer compressed streams.
//!
//! Requests ([`decode`]): a body sent with `Content-Encoding: gzip` is decompressed before a
//! handler reads it, and `HTTP_MAX_BODY_BYTES` bounds both the body as sent and as decompressed, so
//! a small body that inflates to gigabytes (a "zip bomb") is refused with 413 after reading at most
//! that many bytes out of it.

use std::{
    io::{Read, Write},
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::Request,
    http::{
        HeaderMap, HeaderValue, Method, StatusCode,
        header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY},
    },
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use flate2::{Compression, read::MultiGzDecoder, write::GzEncoder};
use hyper::body::{Body as _, Frame};

use crate::http::error::ApiError;

/// Smaller answers go out as they are: gzip's header and trailer alone are 18 bytes, and a
/// compressor costs more CPU to set up than a short answer costs to send.
pub const MIN_BYTES: u64 = 1024;

/// How much compressed output a streamed body gathers before it sends a chunk, when its handler
/// keeps producing.
const CHUNK: usize = 16 * 1024;

/// The response middleware: compresses the answer when the client takes gzip and it is worth it.
pub async fn compress(request: Request, next: Next) -> Response {
    let accepts = request.method() != Method::HEAD && accepts_gzip(request.headers());
    let mut response = next.run(request).await;
    if !worth_compressing(&response) {
        return response;
    }
    // Compressed or not, this answer depends on `Accept-Encoding`: a cache must not give the
    // plain one to a client that takes gzip, nor the reverse.
    response
        .headers_mut()
        .append(VARY, HeaderValue::from_static("accept-encoding"));
    if !accepts {
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    headers.remove(CONTENT_LENGTH);
    response.map(|body| Body::new(GzipBody::new(body)))
}

/// True when `Accept-Encoding` takes gzip (`gzip`, `x-gzip` or `*`, with a q-value above 0).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !refused
                && (name.eq_ignore_ascii_case("gzip")
                    || name.eq_ignore_ascii_case("x-gzip")
                    || name == "*")
        })
}

/// Whether a response should be compressed: not an event stream, not already encoded, not empty,
/// and not short.
fn worth_compressing(response: &Response) -> bool {
    let headers = response.headers();
    let event_stream = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    let short = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|length| length < MIN_BYTES);
    !event_stream
        && !short
        && !headers.contains_key(CONTENT_ENCODING)
        && response.status() != StatusCode::NO_CONTENT
}

/// A body compressed with gzip as it streams.
struct GzipBody {
    inner: Body,
    /// `None` once the trailer has been sent.
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// Input written since the last flush.
    unflushed: bool,
}

impl GzipBody {
    fn new(inner: Body) -> GzipBody {
        GzipBody {
            inner,
            // Level 1: JSON compresses well even so, and the server's CPU is what publishes and
            // delivers events.
            encoder: Some(GzEncoder::new(Vec::new(), Compression::fast())),
            unflushed: false,
        }
    }
}

impl hyper::body::Body for GzipBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped: the API sends none.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    encoder.write_all(&data).map_err(axum::Error::new)?;
                    this.unflushed = true;
                    if encoder.get_ref().len() >= CHUNK {
                        return Poll::Ready(Some(Ok(Frame::data(take(encoder)))));
                    }
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => {
                    let Some(encoder) = this.encoder.take() else {
                        return Poll::Ready(None);
                    };
                    let rest = encoder.finish().map_err(axum::Error::new)?;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
                Poll::Pending => {
                    // Nothing more is ready: what the client has been sent must decompress to all
                    // the handler wrote so far.
                    if this.unflushed {
                        this.unflushed = false;
                        encoder.flush().map_err(axum::Error::new)?;
                        let out = take(encoder);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }
}

/// The compressed output so far; the encoder only ever appends to it.
fn take(encoder: &mut GzEncoder<Vec<u8>>) -> Bytes {
    Bytes::from(std::mem::take(encoder.get_mut()))
}

/// The request body as the handler reads it: `body` as sent, decompressed when its
/// `Content-Encoding` is gzip, at most `limit` bytes either way (`too_large` otherwise).
pub fn decode(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    let mut codings = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .map(|value| value.to_str().unwrap_or("?"))
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
    match (codings.next(), codings.next()) {
        (None, _) => Ok(body),
        (Some(coding), None)
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") =>
        {
            // One byte more than the limit tells a body at the limit from one over it, without
            // inflating any further.
            let mut inflated = Vec::new();
            MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|err| {
                    ApiError::invalid("Content-Encoding", format!("the body is not gzip: {err}"))
                })?;
            if inflated.len() > limit {
                return Err(too_large());
            }
            Ok(Bytes::from(inflated))
        }
        _ => Err(ApiError::invalid(
            "Content-Encoding",
            "the API decodes gzip only (or identity)",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)),
    }
}

/// Decompresses a whole gzip body.
#[cfg(test)]
fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    MultiGzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

/// Collects a body to bytes (a response body in the unit tests).
#[cfg(test)]
async fn collect(body: Body) -> Bytes {
    use http_body_util::BodyExt;
    body.collect().await.unwrap().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        let takes = |value| accepts_gzip(&headers(&[("accept-encoding", value)]));
        assert!(takes("gzip"));
        assert!(takes("br, GZIP;q=0.5"));
        assert!(takes("*"));
        assert!(!takes("gzip;q=0"));
        assert!(!takes("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn request_bodies_inflate_within_the_limit() {
        let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_EXHAUSTED", "x");
        let gz = headers(&[("content-encoding", "gzip")]);
        let plain = decode(&HeaderMap::new(), Bytes::from("hi"), 10, too_large).unwrap();
        assert_eq!(plain, Bytes::from("hi"));
        let inflated = decode(&gz, gzip(&[b'a'; 10]), 10, too_large).unwrap();
        assert_eq!(inflated.len(), 10);
        let bomb = decode(&gz, gzip(&[b'a'; 11]), 10, too_large).unwrap_err();
        assert_eq!(bomb.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let broken = decode(&gz, Bytes::from("not gzip"), 10, too_large).unwrap_err();
        assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            broken.body().error.field.as_deref(),
            Some("Content-Encoding")
        );
        let br = decode(
            &headers(&[("content-encoding", "br")]),
            Bytes::new(),
            10,
            too_large,
        )
        .unwrap_err();
        assert_eq!(br.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn a_streamed_body_is_flushed_whenever_its_source_waits() {
        use http_body_util::BodyExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let mut body = GzipBody::new(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        tx.send(Ok(Bytes::from("first line\n"))).await.unwrap();
        // The source has nothing more ready: the first line must go out, decodable.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        decoder.write_all(&first).unwrap();
        decoder.flush().unwrap();
        assert_eq!(decoder.get_ref().as_slice(), b"first line\n");
        tx.send(Ok(Bytes::from("second line\n"))).await.unwrap();
        drop(tx);
        let rest = collect(Body::new(body)).await;
        let mut whole = first.to_vec();
        whole.extend_from_slice(&rest);
        assert_eq!(gunzip(&whole).unwrap(), b"first line\nsecond line\n");
    }
}
