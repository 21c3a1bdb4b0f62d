//! A counter in a key-value store, incremented with compare-and-set: run it from several shells at
//! once and no increment is lost, because a write based on a stale revision is refused and retried.
//!
//! ```sh
//! cargo run -p jetway-client --example kv_counter
//! ```

use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{Client, DEFAULT_URL, Error, tonic::Code};

/// Increments often enough to see contention between two runs.
const INCREMENTS: u32 = 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("JETWAY_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let client = Client::connect(url).await?;
    let store = client.store("counters");
    store.ensure().await?;

    for _ in 0..INCREMENTS {
        let value = increment(&store, "visits").await?;
        println!("visits = {value}");
    }
    Ok(())
}

/// Adds one to the counter at `key`, retrying when another writer got there first.
async fn increment(store: &jetway_client::Store, key: &str) -> Result<u64, Error> {
    loop {
        let written = match store.get(key).await {
            Ok(entry) => {
                let current: u64 = entry
                    .decode::<StringValue>()
                    .ok()
                    .and_then(|value| value.value.parse().ok())
                    .unwrap_or(0);
                let next = current + 1;
                store
                    .update(key, &counter(next), entry.revision())
                    .await
                    .map(|_| next)
            }
            // No value yet: create it, unless someone else does first.
            Err(error) if error.is_not_found() => store.create(key, &counter(1)).await.map(|_| 1),
            Err(error) => return Err(error),
        };
        match written {
            Ok(value) => return Ok(value),
            // Lost the race: read the new value and try again.
            Err(error)
                if matches!(
                    error.code(),
                    Some(Code::FailedPrecondition | Code::AlreadyExists)
                ) => {}
            Err(error) => return Err(error),
        }
    }
}

fn counter(value: u64) -> StringValue {
    StringValue {
        value: value.to_string(),
    }
}
