//! State messages to and from `jetway-core`: a stored value is the whole serialized
//! `google.protobuf.Any` (Set encodes it, every read decodes it), and Jetway's store options,
//! watch starts and entries.

use jetway_api::{
    google::protobuf::Any,
    jetway::state::v1::{self as ext, watch_request::Start},
};
use jetway_core::{
    Invalid,
    state::{Entry, Operation, StoreSpec, WatchFrom, WatchSpec},
    streams::Storage,
};
use prost::Message;
use tonic::Status;

use crate::{codec::windshift, grpc::status::ToStatus};

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

impl ToStatus for UndecodableValue {
    fn to_status(&self) -> Status {
        // The stored data is not what the API promises; the client cannot fix it by retrying.
        Status::data_loss(self.to_string())
    }
}

/// The value of a stored entry.
pub(crate) fn decode(store: &str, entry: &Entry) -> Result<Any, UndecodableValue> {
    Any::decode(entry.value.clone()).map_err(|err| UndecodableValue {
        store: store.to_owned(),
        key: entry.key.clone(),
        revision: entry.revision,
        reason: err.to_string(),
    })
}

/// Encodes an entry of a Watch or History; only a put has a value.
pub(crate) fn encode_entry(store: &str, entry: Entry) -> Result<ext::Entry, Status> {
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
pub(crate) fn store_spec(request: ext::EnsureStoreRequest) -> Result<StoreSpec, Invalid> {
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
            .map(|ttl| windshift::duration("ttl", ttl))
            .transpose()?,
        history: request.history,
        max_value_size: request.max_value_size,
        storage,
        replicas: request.replicas,
        store: request.store,
    })
}

/// Decodes Watch; a `false` start flag means the same as none.
pub(crate) fn watch_spec(request: ext::WatchRequest) -> WatchSpec {
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
