//! Publishes a few orders, each with an idempotency key, so running it twice stores nothing twice.
//!
//! ```sh
//! cargo run -p jetway-client --example publisher            # against http://localhost:8080
//! JETWAY_URL=http://jetway:8080 cargo run -p jetway-client --example publisher
//! JETWAY_URL=http://jetway-1:8080,http://jetway-2:8080 cargo run -p jetway-client --example publisher
//! ```

use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{Client, DEFAULT_URL, PublishOptions, RetryPolicy, StreamOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One URL, or several replicas separated by commas: calls take turns over them and fail over.
    let urls = std::env::var("JETWAY_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let client = Client::builder()
        .retry_policy(RetryPolicy::new().max_attempts(8))
        .connect_many(urls.split(','))
        .await?;

    // Declaring the stream at startup is idempotent: every service that needs it can do it.
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await?;

    for n in 1..=5 {
        let order = StringValue {
            value: format!("order {n}"),
        };
        // The key makes a retry (or a second run) safe: the stream stores the order once.
        let options = PublishOptions::new().idempotency_key(format!("order-{n}"));
        let id = client
            .publish_with("orders.created", &order, &options)
            .await?;
        println!("published {} as event {id}", order.value);
    }
    Ok(())
}
