//! Just enough of the NATS client protocol to prove a server is alive and to drive the JetStream API
//! (create a stream, ask a leader to step down), without the harness depending on a client crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A blocking NATS connection that sends requests and reads their JSON replies one at a time.
pub(crate) struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The server's `INFO` greeting.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only the testkit's own tests read it")
    )]
    pub(crate) info: serde_json::Value,
}

impl RawClient {
    /// Connects to `127.0.0.1:port`, reads the server's `INFO` greeting and subscribes to replies.
    /// Panics if the server does not greet within a few seconds.
    pub(crate) fn connect(port: u16) -> RawClient {
        Self::try_connect(port)
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"))
    }

    /// As [`RawClient::connect`], but reports a failure instead of panicking.
    pub(crate) fn try_connect(port: u16) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        // Bounds every read, so a silent server fails the caller instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let info = line
            .strip_prefix("INFO ")
            .and_then(|info| serde_json::from_str(info.trim_end()).ok())
            .ok_or_else(|| std::io::Error::other(format!("expected INFO, got {line:?}")))?;
        let mut client = RawClient {
            reader,
            writer,
            info,
        };
        client.send("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB reply 1\r\n")?;
        Ok(client)
    }

    fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.writer.write_all(text.as_bytes())
    }

    /// Publishes `payload` to `subject` and returns the JSON reply. Panics on a failure.
    pub(crate) fn request(&mut self, subject: &str, payload: &str) -> serde_json::Value {
        self.try_request(subject, payload)
            .unwrap_or_else(|e| panic!("request on {subject} failed: {e}"))
    }

    /// As [`RawClient::request`], but reports a failure (no reply in time, a closed connection).
    pub(crate) fn try_request(
        &mut self,
        subject: &str,
        payload: &str,
    ) -> std::io::Result<serde_json::Value> {
        self.send(&format!(
            "PUB {subject} reply {}\r\n{payload}\r\n",
            payload.len()
        ))?;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "PING\r\n" {
                self.send("PONG\r\n")?;
                continue;
            }
            if line.starts_with("INFO ") {
                continue;
            }
            let len: usize = line
                .strip_prefix("MSG reply 1 ")
                .and_then(|len| len.trim_end().parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("expected a reply, got {line:?}")))?;
            // The payload is followed by CRLF.
            let mut body = vec![0; len + 2];
            self.reader.read_exact(&mut body)?;
            return serde_json::from_slice(&body[..len]).map_err(std::io::Error::other);
        }
    }
}
