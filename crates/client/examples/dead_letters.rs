//! Dead letters, end to end: a consumer with a delivery policy, a raw JSON event with a custom
//! header, a worker that fetches it and gives up on it, the dead letter it leaves, and a redrive
//! that publishes it again; then the stream is read back and inspected.
//!
//! ```sh
//! cargo run -p jetway-client --example dead_letters
//! ```

use std::time::Duration;

use futures::TryStreamExt;
use jetway_client::{
    Client, ConsumerOptions, DEFAULT_URL, FetchOptions, PublishOptions, ReadOptions, StartPosition,
    StoredEvent, StreamOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("JETWAY_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let client = Client::connect(url).await?;
    client
        .streams()
        .ensure(&StreamOptions::new("payments").subjects(["payments.>"]))
        .await?;
    let charger = ConsumerOptions::durable("charger")
        .subject("payments.>")
        .from(StartPosition::Start)
        .max_deliveries(3)
        .backoff([Duration::from_secs(1), Duration::from_secs(10)])
        .dead_letter_stream("payments-dead");
    client.consumers().ensure("payments", &charger).await?;

    let options = PublishOptions::new().header("published-by", "checkout");
    let id = client
        .publish_bytes(
            "payments.card",
            r#"{"amount":-5}"#,
            "application/json",
            &options,
        )
        .await?;
    println!("published #{id}");

    // A worker that cannot charge a negative amount: rejected for good, so dead-lettered.
    let fetcher = client.fetcher("payments", "charger");
    let fetched = fetcher
        .fetch_with(&FetchOptions::new().wait(Duration::from_secs(5)))
        .await?;
    let ids: Vec<u64> = fetched.events.iter().map(StoredEvent::id).collect();
    fetcher.reject_permanently(&ids).await?;

    // The server copies it to the dead-letter stream in the background.
    let dead = client.dead_letters("payments-dead");
    let letters = loop {
        let letters: Vec<_> = dead.list().await?.try_collect().await?;
        if !letters.is_empty() {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for letter in &letters {
        println!(
            "dead letter {}: #{} from {}/{}, {:?} after {} delivery(ies), headers {:?}",
            letter.id,
            letter.event.id(),
            letter.stream,
            letter.consumer,
            letter.reason,
            letter.attempts,
            letter.event.headers()
        );
    }
    let ids: Vec<u64> = letters.iter().map(|letter| letter.id).collect();
    for redriven in dead.redrive(&ids).await?.redriven {
        println!("redriven {} as #{}", redriven.id, redriven.event_id);
    }

    let events: Vec<StoredEvent> = client
        .read_with("payments", &ReadOptions::new().subject("payments.card"))
        .await?
        .try_collect()
        .await?;
    for event in &events {
        println!(
            "read #{} {} {:?}",
            event.id(),
            event.subject(),
            event.payload()
        );
    }
    let stream = client.streams().info("payments").await?;
    println!(
        "payments: {} events, subjects {:?}",
        stream.info.state.events, stream.subject_counts
    );
    let info = client.consumers().info("payments", "charger").await?;
    println!(
        "charger: max deliveries {:?}, backoff {:?}, dead letters to {:?}",
        info.max_deliveries, info.backoff, info.dead_letter_stream
    );
    Ok(())
}
