//! The HTTP API's scenarios, with hyper's HTTP/1.1 client (the one the server's tests use):
//!
//! - **G1**: `concurrency` callers publish 1 KiB events with `POST /v1/publish/{subject}`, each on
//!   a keep-alive connection of its own, waiting for the answer before the next; its direct side
//!   is P2's (`send_publish` and its ack), and the run also sets it beside P2's gRPC PublishEvent.
//! - **G2**: `subscribers` live subscribers of one subject receive every event published at a
//!   fixed rate: over Server-Sent Events (`GET /v1/subscribe/{subject}`, a connection each) on the
//!   Jetway side, over gRPC Subscribe (a stream each, on the bench's one channel) on the other, so
//!   the ratio compares the two ways out of the same live feed. The latency is from the moment the
//!   event is handed to the publishing client (stamped into its body) until a subscriber has
//!   parsed it; the first tenth of each round is warmup.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use jetway_api::jetway::events::v1::{
    SubscribeRequest, event::Payload, events_service_client::EventsServiceClient,
};

use crate::{
    Result,
    scenarios::{Amount, Bench, Path, STREAM, SUBJECT, concurrent, latency, payload, throughput},
    stats,
};

/// Digits of the send time stamped at the start of a G2 body (nanoseconds since the round began).
const STAMP: usize = 20;

/// One HTTP/1.1 keep-alive connection to the API.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

impl Bench {
    fn http_addr(&self) -> Result<SocketAddr> {
        self.http_addr
            .ok_or_else(|| "G1 and G2 need the HTTP API: let the bench start jetway-server".into())
    }

    /// G1: see the module docs. The direct side is P2's.
    pub(crate) async fn http_publish(
        &self,
        path: Path,
        concurrency: usize,
        amount: Amount,
    ) -> Result<crate::stats::Round> {
        if path == Path::Direct {
            return self.unary_publish(path, concurrency, amount, false).await;
        }
        let addr = self.http_addr()?;
        self.reset_stream().await?;
        let body = payload(self.size);
        let mut connections = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            connections.push(connect(addr).await?);
        }
        // Each call takes a free connection and puts it back: with as many connections as
        // callers, one is always free, and every connection stays kept alive.
        let pool = Arc::new(Mutex::new(connections));
        let uri = format!("/v1/publish/{SUBJECT}");
        let mark = self.mark();
        let (done, elapsed) = concurrent(concurrency, amount, move |_| {
            let (pool, body, uri) = (pool.clone(), body.clone(), uri.clone());
            async move {
                let mut sender = take(&pool)?;
                sender.ready().await?;
                let request = hyper::Request::post(uri)
                    .header("host", "jetway")
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(body))?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                // The body is read whole, so the connection is ready for the next request.
                let answer = response.into_body().collect().await?.to_bytes();
                if status != hyper::StatusCode::CREATED {
                    return Err(format!("G1: {status} {answer:?}").into());
                }
                give_back(&pool, sender);
                Ok(())
            }
        })
        .await?;
        Ok(throughput(done, elapsed, self.since(&mark, path)))
    }

    /// G2: see the module docs. `Path::Direct` is the gRPC Subscribe side.
    pub(crate) async fn fan_out(
        &self,
        path: Path,
        subscribers: usize,
        rate: f64,
        duration: Duration,
    ) -> Result<crate::stats::Round> {
        let addr = self.http_addr()?;
        self.reset_stream().await?;
        let events = (rate * duration.as_secs_f64()).max(10.0) as u64;
        let warmup = events / 10;
        let epoch = Instant::now();
        let mut readers = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            // Every subscription is open (its live feed too) when its answer has come, so no
            // event is published before all subscribers follow.
            let reader = match path {
                Path::Direct => Subscriber::grpc(self).await?,
                Path::Jetway => Subscriber::sse(addr).await?,
            };
            readers.push(tokio::spawn(reader.read(events, warmup, epoch)));
        }
        let mark = self.mark();
        let js = async_nats::jetstream::new(self.nats.clone());
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for _ in 0..events {
            ticks.tick().await;
            let mut body = format!("{:0STAMP$}", epoch.elapsed().as_nanos()).into_bytes();
            body.resize(self.size.max(STAMP), b'x');
            let mut headers = HeaderMap::new();
            headers.insert("Content-Type", "text/plain");
            js.publish_with_headers(SUBJECT, headers, body.into())
                .await?
                .await?;
        }
        let mut histogram = stats::histogram();
        for reader in readers {
            histogram.add(reader.await??)?;
        }
        let received = histogram.len();
        Ok(latency(histogram, received, self.since(&mark, path)))
    }
}

fn take(pool: &Mutex<Vec<SendRequest<Full<Bytes>>>>) -> Result<SendRequest<Full<Bytes>>> {
    pool.lock()
        .map_err(|_| "G1: a caller panicked")?
        .pop()
        .ok_or_else(|| "G1: no free connection".into())
}

fn give_back(pool: &Mutex<Vec<SendRequest<Full<Bytes>>>>, sender: SendRequest<Full<Bytes>>) {
    if let Ok(mut pool) = pool.lock() {
        pool.push(sender);
    }
}

/// One G2 subscriber.
enum Subscriber {
    Grpc(tonic::Streaming<jetway_api::jetway::events::v1::SubscribeResponse>),
    Sse(hyper::body::Incoming),
}

impl Subscriber {
    async fn grpc(bench: &Bench) -> Result<Subscriber> {
        let mut client = EventsServiceClient::new(bench.channel.clone());
        let stream = client
            .subscribe(SubscribeRequest {
                subject: SUBJECT.into(),
                stream: STREAM.into(),
            })
            .await?
            .into_inner();
        Ok(Subscriber::Grpc(stream))
    }

    async fn sse(addr: SocketAddr) -> Result<Subscriber> {
        let mut sender = connect(addr).await?;
        let request = hyper::Request::get(format!("/v1/subscribe/{SUBJECT}?stream={STREAM}"))
            .header("host", "jetway")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("G2: subscribe answered {}", response.status()).into());
        }
        // The connection task lives as long as the body is read.
        Ok(Subscriber::Sse(response.into_body()))
    }

    /// Reads `events` events and records the latency of those after the first `warmup`.
    async fn read(self, events: u64, warmup: u64, epoch: Instant) -> Result<Histogram<u64>> {
        let mut seen = Seen {
            histogram: stats::histogram(),
            count: 0,
            warmup,
            epoch,
        };
        let deadline = Duration::from_secs(30);
        match self {
            Subscriber::Grpc(mut stream) => {
                while seen.count < events {
                    let response = tokio::time::timeout(deadline, stream.next())
                        .await
                        .map_err(|_| "G2: gRPC deliveries stopped")?
                        .ok_or("G2: the gRPC stream ended")??;
                    match response.event.and_then(|event| event.payload) {
                        Some(Payload::Raw(raw)) => seen.record(&raw.data)?,
                        other => return Err(format!("G2: unexpected payload {other:?}").into()),
                    }
                }
            }
            Subscriber::Sse(mut body) => {
                let mut buffer = BytesMut::new();
                // `"data":"<stamp>` in the event's JSON, which is the `data:` line's text.
                let marker = br#""data":""#;
                while seen.count < events {
                    if let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
                        let message = buffer.split_to(end + 2);
                        if let Some(at) = message
                            .windows(marker.len())
                            .position(|window| window == marker)
                        {
                            seen.record(&message[at + marker.len()..])?;
                        }
                        continue;
                    }
                    let frame = tokio::time::timeout(deadline, body.frame())
                        .await
                        .map_err(|_| "G2: SSE deliveries stopped")?
                        .ok_or("G2: the SSE stream ended")??;
                    if let Ok(data) = frame.into_data() {
                        buffer.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(seen.histogram)
    }
}

/// The events a G2 subscriber has received, and their latencies past the warmup.
struct Seen {
    histogram: Histogram<u64>,
    count: u64,
    warmup: u64,
    epoch: Instant,
}

impl Seen {
    /// Records the event whose body starts with `stamp`.
    fn record(&mut self, stamp: &[u8]) -> Result<()> {
        let sent: u64 =
            std::str::from_utf8(stamp.get(..STAMP).ok_or("G2: a short body")?)?.parse()?;
        let now = self.epoch.elapsed().as_nanos() as u64;
        if self.count >= self.warmup {
            stats::record(
                &mut self.histogram,
                Duration::from_nanos(now.saturating_sub(sent)),
            );
        }
        self.count += 1;
        Ok(())
    }
}
