//! `jetway read`: a stream's stored events from a position, printed oldest first, ending once
//! caught up with the last event stored when it started. No consumer is made and nothing is
//! acknowledged, so reading never changes what consumers get.

use futures::StreamExt;
use jetway_client::{Client, ReadOptions};

use crate::{CliError, args::ReadArgs, interrupt::Interrupt, output::Output};

/// Runs `jetway read`.
pub(crate) async fn run(client: &Client, args: ReadArgs, output: &Output) -> Result<(), CliError> {
    let mut options = ReadOptions::new().from(args.from);
    if let Some(subject) = &args.subject {
        options = options.subject(subject);
    }
    if let Some(limit) = args.limit {
        options = options.limit(limit);
    }
    let mut events = client.read_with(&args.stream, &options).await?;
    // A read ends by itself; Ctrl-C or SIGTERM still stops a long one between two events.
    let mut interrupt = Interrupt::new();
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            () = interrupt.recv() => return Ok(()),
        };
        match next {
            Some(event) => output.stored_event(&event?)?,
            None => return Ok(()),
        }
    }
}
