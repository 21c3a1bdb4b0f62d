//! A worker: a durable consumer that processes orders, acks what it handled, rejects what it cannot
//! handle yet, and drops what it can never handle. Stop it with Ctrl-C; started again, it resumes
//! where it left off.
//!
//! ```sh
//! cargo run -p jetway-client --example worker
//! ```

use std::time::Duration;

use futures::StreamExt;
use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{
    Client, ConsumerOptions, DEFAULT_URL, SettleError, StartPosition, StreamOptions,
    SubscribeOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("JETWAY_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let client = Client::connect(url).await?;
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await?;
    let consumer = ConsumerOptions::durable("billing")
        .subject("orders.>")
        .from(StartPosition::Start)
        .processing_timeout(Duration::from_secs(10));
    client.consumers().ensure("orders", &consumer).await?;

    // At most 10 orders in progress; the server sends the next when one is settled.
    let options = SubscribeOptions::new().max_processing_events(10);
    let mut events = client.subscribe_with("orders", "billing", &options).await?;
    println!("waiting for orders (Ctrl-C to stop)");
    loop {
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => event?,
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        let Ok(order) = event.decode::<StringValue>() else {
            // Not an order and never will be: redelivering it would not help.
            warn(event.reject_permanently().await);
            continue;
        };
        // Work longer than half the processing timeout is fine: the subscription pings the event.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if order.value.is_empty() {
            // Try again in a minute.
            warn(event.reject_after(Duration::from_secs(60)).await);
        } else {
            println!(
                "billed {} (event {}, attempt {})",
                order.value,
                event.id(),
                event.delivery_attempt()
            );
            warn(event.ack().await);
        }
    }
    Ok(())
}

/// A settle that failed is not fatal: the event comes back (at-least-once delivery), for instance
/// after the subscription reconnected, so the worker says so and goes on.
fn warn(settled: Result<(), SettleError>) {
    if let Err(error) = settled {
        eprintln!("warning: {error}");
    }
}
