//! `jetway consume` (a durable consumer that resumes where it left off) and `jetway tail` (a
//! temporary consumer from the end): both print each event and ack it. `consume --count N` fetches
//! instead of subscribing, so it takes exactly N events.

use std::time::Duration;

use futures::StreamExt;
use jetway_client::{
    Client, ConsumerOptions, DEFAULT_MAX_PROCESSING_EVENTS, FetchOptions, Fetcher, StartPosition,
    SubscribeOptions, Subscription,
};

use crate::{
    CliError,
    args::{ConsumeArgs, TailArgs},
    interrupt::Interrupt,
    output::Output,
    stream,
};

/// Runs `jetway consume`.
pub(crate) async fn consume(
    client: &Client,
    args: ConsumeArgs,
    output: &Output,
) -> Result<(), CliError> {
    let stream = stream::resolve(client, &args.subject, &args.target).await?;
    let mut options = ConsumerOptions::durable(&args.consumer)
        .subject(&args.subject)
        .from(args.from);
    // Only what was given: without any of these an existing consumer keeps its policy, with any
    // of them the policy is written in full.
    if let Some(max) = args.max_deliveries {
        options = options.max_deliveries(max);
    }
    if !args.backoff.is_empty() {
        options = options.backoff(args.backoff.iter().copied());
    }
    if let Some(dead_letters) = &args.dead_letter {
        options = options.dead_letter_stream(dead_letters);
    }
    let id = match client.consumers().ensure(&stream, &options).await {
        // NOT_FOUND from EnsureConsumer means the stream given with --stream does not exist, so
        // creating it overwrites nothing.
        Err(error) if error.is_not_found() && args.target.create => {
            stream::create(client, &stream, &args.subject).await?;
            client.consumers().ensure(&stream, &options).await?
        }
        result => result?,
    };
    if args.count == Some(0) {
        eprintln!("consumer {id} on {stream} is ready for {}", args.subject);
        return Ok(());
    }
    let message = format!("consuming {} from {stream} as {id}", args.subject);
    let mut interrupt = Interrupt::new();
    match args.count {
        Some(count) => {
            eprintln!("{message}");
            fetch_and_ack(&client.fetcher(&stream, &id), count, output, &mut interrupt).await
        }
        None => {
            let events = subscribe(client, &stream, &id, None).await?;
            eprintln!("{message}");
            print_and_ack(events, None, output, &mut interrupt).await
        }
    }
}

/// The most events fetched at once: printed, then acked together, well within any processing
/// timeout (a backoff's first entry may be 1 s).
const FETCH_BATCH: u64 = 10;
/// How long one Fetch waits for an event; the next one waits again.
const FETCH_WAIT: Duration = Duration::from_secs(30);

/// Fetches, prints and acks `count` events, or fewer on Ctrl-C or SIGTERM. A fetch takes no more
/// than it asks for, so the events after the last one stay in the consumer, undelivered; a
/// subscription would pull the next one as soon as an ack freed a slot, and give it back at exit,
/// which JetStream counts as a delivery.
async fn fetch_and_ack(
    fetcher: &Fetcher,
    count: u64,
    output: &Output,
    interrupt: &mut Interrupt,
) -> Result<(), CliError> {
    let mut done = 0u64;
    while done < count {
        // At most FETCH_BATCH, so the conversion cannot fail.
        let max = u32::try_from((count - done).min(FETCH_BATCH)).unwrap_or(u32::MAX);
        let options = FetchOptions::new().max_events(max).wait(FETCH_WAIT);
        let fetched = tokio::select! {
            fetched = fetcher.fetch_with(&options) => fetched?,
            // The server gives back what a cancelled fetch took.
            () = interrupt.recv() => return Ok(()),
        };
        if fetched.events.is_empty() {
            continue;
        }
        for event in &fetched.events {
            output.fetched(event)?;
        }
        done += fetched.events.len() as u64;
        // A failed ack is not fatal: the event comes back and is printed again (at-least-once).
        let ids: Vec<u64> = fetched.events.iter().map(|event| event.id()).collect();
        match fetcher.ack(&ids).await {
            Ok(settled) if settled.ids.len() < ids.len() => eprintln!(
                "warning: {} of {} events were not acked (past their processing timeout, or NATS \
                 is away); JetStream delivers them again",
                ids.len() - settled.ids.len(),
                ids.len()
            ),
            Ok(_) => {}
            Err(error) => eprintln!("warning: {error}"),
        }
    }
    Ok(())
}

/// Runs `jetway tail`: its consumer is deleted however the run ends, Ctrl-C and SIGTERM included.
pub(crate) async fn tail(client: &Client, args: TailArgs, output: &Output) -> Result<(), CliError> {
    // Watched from the start, so a signal during the setup still ends the run through the cleanup.
    let mut interrupt = Interrupt::new();
    let options = ConsumerOptions::ephemeral()
        .subject(&args.subject)
        .from(StartPosition::End);
    let consumers = client.consumers();
    let id = tokio::select! {
        id = consumers.ensure(&args.stream, &options) => id?,
        // Nothing made yet; a consumer the server makes all the same expires within the hour.
        () = interrupt.recv() => return Ok(()),
    };
    let subscribed = tokio::select! {
        subscribed = subscribe(client, &args.stream, &id, args.count) => Some(subscribed),
        () = interrupt.recv() => None,
    };
    let result = match subscribed {
        Some(Ok(events)) => {
            eprintln!("tailing {} on {}", args.subject, args.stream);
            print_and_ack(events, args.count, output, &mut interrupt).await
        }
        Some(Err(error)) => Err(error),
        None => Ok(()),
    };
    // The server would remove it after an hour without a subscriber; no need to wait for that. A
    // second signal gives up on it (the server is away, say).
    tokio::select! {
        _ = consumers.delete(&args.stream, &id) => {}
        () = interrupt.recv() => {}
    }
    result
}

/// Subscribes holding no more events than will be printed (a `tail --count` run).
async fn subscribe(
    client: &Client,
    stream: &str,
    consumer: &str,
    count: Option<u64>,
) -> Result<Subscription, CliError> {
    let max = count.map_or(DEFAULT_MAX_PROCESSING_EVENTS, |count| {
        count.clamp(1, DEFAULT_MAX_PROCESSING_EVENTS)
    });
    let options = SubscribeOptions::new().max_processing_events(max);
    Ok(client.subscribe_with(stream, consumer, &options).await?)
}

/// Prints and acks events until `count` are done, the subscription ends, or Ctrl-C or SIGTERM (a
/// signal between two events is kept by `interrupt`, not missed).
async fn print_and_ack(
    mut events: Subscription,
    count: Option<u64>,
    output: &Output,
    interrupt: &mut Interrupt,
) -> Result<(), CliError> {
    let mut done = 0u64;
    while count.is_none_or(|count| done < count) {
        let next = tokio::select! {
            next = events.next() => next,
            () = interrupt.recv() => return Ok(()),
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(error)) => return Err(error.into()),
            None => return Ok(()),
        };
        output.event(&event)?;
        // A failed ack is not fatal: the event comes back and is printed again (at-least-once).
        if let Err(error) = event.ack().await {
            eprintln!("warning: {error}");
        }
        done += 1;
    }
    Ok(())
}
