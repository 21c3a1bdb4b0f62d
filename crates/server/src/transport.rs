//! HTTP/2 settings of the gRPC port that protect a client's connection, not just the server.

/// HTTP/2 receive window of one connection. h2 closes a connection with GOAWAY
/// `ENHANCE_YOUR_CALM` ("too_many_data_frames") once the DATA frames it has received and the
/// server has not read yet cost more than half of this window, a frame under 256 bytes costing
/// 256 minus its size (h2's guard against floods of tiny frames). With hyper's adaptive window the
/// connection and stream windows were equal, so a single stream of tiny messages (a PublishStream
/// of small events, an Events stream acking one id at a time) that arrived faster than the server
/// read them broke the whole connection long before flow control slowed the client.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// HTTP/2 receive window of one stream: 1/64 of the connection's, so that one stream's unread
/// frames stay within h2's budget even when each carries a message of 3 bytes (a frame of 8:
/// 256 KiB / 8 × 248 < 8 MiB). Flow control then holds back a client that sends faster than the
/// server reads, as the protocol intends. It also bounds what one connection can make the server
/// buffer to [`CONNECTION_WINDOW`], as the adaptive window's largest size did.
pub const STREAM_WINDOW: u32 = CONNECTION_WINDOW / 64;
