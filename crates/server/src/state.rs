//! The state services: `windshift.state.v1alpha1.StateService` (EnsureStore, Get, Set, Delete) and
//! Jetway's `jetway.state.v1.StateService` (EnsureStore with options, Watch, Keys, History). Both are
//! thin handlers over `jetway_core::state`.
//!
//! A stored value is the whole serialized `google.protobuf.Any`: Set encodes it and every read
//! decodes it. The streaming calls go through [`crate::streaming::forward`]; server shutdown ends
//! them with UNAVAILABLE.

use futures::StreamExt;
use jetway_api::{
    google::protobuf::Any,
    jetway::state::v1::{
        self as ext, state_service_server::StateService as ExtStateService, watch_request::Start,
    },
    windshift::state::v1alpha1::{
        self as ws, state_service_server::StateService as WindshiftStateService,
    },
};
use jetway_core::{
    Invalid, Nats,
    state::{self as core, Entry, Operation, StoreSpec, WatchFrom, WatchSpec, Write},
    streams::Storage,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    convert,
    status::ToStatus,
    streaming::{Responses, forward},
};

/// Most keys in one Keys response. Keys are at most 1 KiB, so a response stays well under gRPC's
/// default 4 MiB message limit.
const KEYS_PER_RESPONSE: usize = 256;

/// A stored value that is not a serialized `google.protobuf.Any`: another NATS client wrote it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the value of key {key} (revision {revision}) in store {store} is not a serialized google.protobuf.Any: {reason}"
)]
pub struct UndecodableValue {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
    /// The entry's revision.
    pub revision: u64,
    /// What the decoder said.
    pub reason: String,
}

/// The Windshift state service.
#[derive(Clone)]
pub struct State {
    nats: Nats,
}

impl State {
    /// A service over `nats`.
    pub fn new(nats: Nats) -> Self {
        State { nats }
    }
}

#[tonic::async_trait]
impl WindshiftStateService for State {
    async fn ensure_store(
        &self,
        request: Request<ws::EnsureStoreRequest>,
    ) -> Result<Response<ws::EnsureStoreResponse>, Status> {
        core::ensure_store(&self.nats, &request.into_inner().store)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ws::EnsureStoreResponse {}))
    }

    async fn get(
        &self,
        request: Request<ws::GetRequest>,
    ) -> Result<Response<ws::GetResponse>, Status> {
        let request = request.into_inner();
        let entry = core::get(&self.nats, &request.store, &request.key)
            .await
            .map_err(|e| e.to_status())?;
        let value = decode(&request.store, &entry).map_err(|e| e.to_status())?;
        Ok(Response::new(ws::GetResponse {
            last_updated: Some(entry.time.into()),
            revision: entry.revision,
            value: Some(value),
        }))
    }

    async fn set(
        &self,
        request: Request<ws::SetRequest>,
    ) -> Result<Response<ws::SetResponse>, Status> {
        let request = request.into_inner();
        let value = request
            .value
            .ok_or_else(|| Invalid::new("value", "is required").to_status())?;
        let write = Write {
            store: request.store,
            key: request.key,
            value: value.encode_to_vec().into(),
            create_only: request.create_only.unwrap_or(false),
            last_revision: request.last_revision,
        };
        let revision = core::set(&self.nats, write)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ws::SetResponse { revision }))
    }

    async fn delete(
        &self,
        request: Request<ws::DeleteRequest>,
    ) -> Result<Response<ws::DeleteResponse>, Status> {
        let request = request.into_inner();
        core::delete(
            &self.nats,
            &request.store,
            &request.key,
            request.last_revision,
        )
        .await
        .map_err(|e| e.to_status())?;
        Ok(Response::new(ws::DeleteResponse {}))
    }
}

/// Jetway's state service.
#[derive(Clone)]
pub struct StateExt {
    nats: Nats,
    shutdown: CancellationToken,
}

impl StateExt {
    /// A service over `nats`. Cancelling `shutdown` ends every open Watch, Keys and History stream with
    /// UNAVAILABLE.
    pub fn new(nats: Nats, shutdown: CancellationToken) -> Self {
        StateExt { nats, shutdown }
    }
}

#[tonic::async_trait]
impl ExtStateService for StateExt {
    async fn ensure_store(
        &self,
        request: Request<ext::EnsureStoreRequest>,
    ) -> Result<Response<ext::EnsureStoreResponse>, Status> {
        let spec = store_spec(request.into_inner()).map_err(|e| e.to_status())?;
        let created = core::configure_store(&self.nats, &spec)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ext::EnsureStoreResponse { created }))
    }

    type WatchStream = Responses<ext::WatchResponse>;

    async fn watch(
        &self,
        request: Request<ext::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let spec = watch_spec(request.into_inner());
        let entries = core::watch(&self.nats, &spec)
            .await
            .map_err(|e| e.to_status())?;
        let store = spec.store;
        Ok(Response::new(forward(
            entries,
            move |entry| {
                Ok(ext::WatchResponse {
                    entry: Some(encode_entry(&store, entry)?),
                })
            },
            self.shutdown.clone(),
            ON_SHUTDOWN,
        )))
    }

    type KeysStream = Responses<ext::KeysResponse>;

    async fn keys(
        &self,
        request: Request<ext::KeysRequest>,
    ) -> Result<Response<Self::KeysStream>, Status> {
        let request = request.into_inner();
        let keys = core::keys(&self.nats, &request.store, &request.filter)
            .await
            .map_err(|e| e.to_status())?;
        // Whatever keys are ready go out together; an error ends the stream, so the keys batched
        // with it need not be sent.
        let batches = keys
            .ready_chunks(KEYS_PER_RESPONSE)
            .map(|batch| batch.into_iter().collect::<Result<Vec<_>, _>>())
            .boxed();
        Ok(Response::new(forward(
            batches,
            |keys| Ok(ext::KeysResponse { keys }),
            self.shutdown.clone(),
            ON_SHUTDOWN,
        )))
    }

    type HistoryStream = Responses<ext::HistoryResponse>;

    async fn history(
        &self,
        request: Request<ext::HistoryRequest>,
    ) -> Result<Response<Self::HistoryStream>, Status> {
        let request = request.into_inner();
        let entries = core::history(&self.nats, &request.store, &request.key)
            .await
            .map_err(|e| e.to_status())?;
        let store = request.store;
        Ok(Response::new(forward(
            entries,
            move |entry| {
                Ok(ext::HistoryResponse {
                    entry: Some(encode_entry(&store, entry)?),
                })
            },
            self.shutdown.clone(),
            ON_SHUTDOWN,
        )))
    }
}

/// What a stream that server shutdown ends tells the client.
const ON_SHUTDOWN: &str =
    "call again to continue (a Watch with after_revision set to the last revision received)";

/// The value of a stored entry.
fn decode(store: &str, entry: &Entry) -> Result<Any, UndecodableValue> {
    Any::decode(entry.value.clone()).map_err(|err| UndecodableValue {
        store: store.to_owned(),
        key: entry.key.clone(),
        revision: entry.revision,
        reason: err.to_string(),
    })
}

/// Encodes an entry of a Watch or History; only a put has a value.
fn encode_entry(store: &str, entry: Entry) -> Result<ext::Entry, Status> {
    let (operation, value) = match entry.operation {
        Operation::Put => (
            ext::Operation::Put,
            Some(decode(store, &entry).map_err(|e| e.to_status())?),
        ),
        Operation::Delete => (ext::Operation::Delete, None),
        Operation::Purge => (ext::Operation::Purge, None),
    };
    Ok(ext::Entry {
        key: entry.key,
        revision: entry.revision,
        operation: operation.into(),
        time: Some(entry.time.into()),
        value,
    })
}

/// Decodes Jetway's EnsureStore.
fn store_spec(request: ext::EnsureStoreRequest) -> Result<StoreSpec, Invalid> {
    let storage = match request.storage.map(ext::StorageType::try_from) {
        None | Some(Ok(ext::StorageType::Unspecified)) => None,
        Some(Ok(ext::StorageType::File)) => Some(Storage::File),
        Some(Ok(ext::StorageType::Memory)) => Some(Storage::Memory),
        Some(Err(_)) => return Err(Invalid::new("storage", "unknown enum value")),
    };
    Ok(StoreSpec {
        ttl: request
            .ttl
            .as_ref()
            .map(|ttl| convert::duration("ttl", ttl))
            .transpose()?,
        history: request.history,
        max_value_size: request.max_value_size,
        storage,
        replicas: request.replicas,
        store: request.store,
    })
}

/// Decodes Watch; a `false` start flag means the same as none.
fn watch_spec(request: ext::WatchRequest) -> WatchSpec {
    let from = match request.start {
        None | Some(Start::IncludeHistory(false) | Start::UpdatesOnly(false)) => WatchFrom::Current,
        Some(Start::IncludeHistory(true)) => WatchFrom::History,
        Some(Start::UpdatesOnly(true)) => WatchFrom::UpdatesOnly,
        Some(Start::AfterRevision(revision)) => WatchFrom::After(revision),
    };
    WatchSpec {
        store: request.store,
        key: request.key,
        from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetway_api::google::protobuf::Duration as PbDuration;

    #[test]
    fn store_options_decode_and_bad_ones_name_their_field() {
        let request = ext::EnsureStoreRequest {
            store: "s".into(),
            ttl: Some(PbDuration {
                seconds: 60,
                nanos: 0,
            }),
            history: Some(5),
            storage: Some(ext::StorageType::Memory.into()),
            ..Default::default()
        };
        let spec = store_spec(request.clone()).unwrap();
        assert_eq!(spec.ttl, Some(std::time::Duration::from_secs(60)));
        assert_eq!(spec.storage, Some(Storage::Memory));
        let bad_storage = ext::EnsureStoreRequest {
            storage: Some(42),
            ..request.clone()
        };
        assert_eq!(store_spec(bad_storage).unwrap_err().field, "storage");
        let negative = ext::EnsureStoreRequest {
            ttl: Some(PbDuration {
                seconds: -1,
                nanos: 0,
            }),
            ..request
        };
        assert_eq!(store_spec(negative).unwrap_err().field, "ttl");
    }

    #[test]
    fn watch_starts() {
        let from = |start| {
            watch_spec(ext::WatchRequest {
                start,
                ..Default::default()
            })
            .from
        };
        assert_eq!(from(None), WatchFrom::Current);
        assert_eq!(from(Some(Start::IncludeHistory(false))), WatchFrom::Current);
        assert_eq!(from(Some(Start::IncludeHistory(true))), WatchFrom::History);
        assert_eq!(from(Some(Start::UpdatesOnly(true))), WatchFrom::UpdatesOnly);
        assert_eq!(from(Some(Start::AfterRevision(7))), WatchFrom::After(7));
    }

    #[test]
    fn entries_carry_a_value_only_for_puts() {
        let any = Any::pack(&jetway_api::windshift::test::v1::StringValue { value: "v".into() });
        let put = Entry {
            key: "k".into(),
            revision: 3,
            operation: Operation::Put,
            time: std::time::UNIX_EPOCH,
            value: any.encode_to_vec().into(),
        };
        let encoded = encode_entry("s", put.clone()).unwrap();
        assert_eq!(encoded.value, Some(any));
        assert_eq!(encoded.operation, i32::from(ext::Operation::Put));
        let deleted = Entry {
            operation: Operation::Delete,
            value: Default::default(),
            ..put.clone()
        };
        assert_eq!(encode_entry("s", deleted).unwrap().value, None);
        let corrupt = Entry {
            value: bytes::Bytes::from_static(b"\xff\xff"),
            ..put
        };
        assert_eq!(
            encode_entry("s", corrupt).unwrap_err().code(),
            tonic::Code::DataLoss
        );
    }
}
