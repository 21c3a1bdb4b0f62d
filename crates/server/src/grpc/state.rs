//! Jetway's `jetway.state.v1.StateService` (EnsureStore with options, Watch, Keys, History): thin
//! handlers over `jetway_core::state`. The streaming calls go through
//! [`crate::grpc::streaming::forward`]; server shutdown ends them with UNAVAILABLE.

use futures::StreamExt;
use jetway_api::jetway::state::v1::{
    self as ext, state_service_server::StateService as ExtStateService,
};
use jetway_core::{Nats, state as core};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    auth::{Caller, Permission},
    codec::state::{encode_entry, store_spec, watch_spec},
    grpc::{
        status::ToStatus,
        streaming::{Responses, forward},
    },
};

/// Most keys in one Keys response. Keys are at most 1 KiB, so a response stays well under gRPC's
/// default 4 MiB message limit.
const KEYS_PER_RESPONSE: usize = 256;

/// Jetway's state service.
#[derive(Clone)]
pub struct JetwayState {
    nats: Nats,
    shutdown: CancellationToken,
}

impl JetwayState {
    /// A service over `nats`. Cancelling `shutdown` ends every open Watch, Keys and History stream with
    /// UNAVAILABLE.
    pub fn new(nats: Nats, shutdown: CancellationToken) -> Self {
        JetwayState { nats, shutdown }
    }
}

#[tonic::async_trait]
impl ExtStateService for JetwayState {
    async fn ensure_store(
        &self,
        request: Request<ext::EnsureStoreRequest>,
    ) -> Result<Response<ext::EnsureStoreResponse>, Status> {
        let caller = Caller::of(&request)?;
        let spec = store_spec(request.into_inner()).map_err(|e| e.to_status())?;
        caller.check(Permission::StateWrite, &spec.store)?;
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
        let caller = Caller::of(&request)?;
        let spec = watch_spec(request.into_inner());
        let grant = caller.hold(Permission::StateRead, &spec.store)?;
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
            grant,
            self.shutdown.clone(),
            ON_SHUTDOWN,
        )))
    }

    type KeysStream = Responses<ext::KeysResponse>;

    async fn keys(
        &self,
        request: Request<ext::KeysRequest>,
    ) -> Result<Response<Self::KeysStream>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let grant = caller.hold(Permission::StateRead, &request.store)?;
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
            grant,
            self.shutdown.clone(),
            ON_SHUTDOWN,
        )))
    }

    type HistoryStream = Responses<ext::HistoryResponse>;

    async fn history(
        &self,
        request: Request<ext::HistoryRequest>,
    ) -> Result<Response<Self::HistoryStream>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let grant = caller.hold(Permission::StateRead, &request.store)?;
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
            grant,
            self.shutdown.clone(),
            ON_SHUTDOWN,
        )))
    }
}

/// What a stream that server shutdown ends tells the client.
const ON_SHUTDOWN: &str =
    "call again to continue (a Watch with after_revision set to the last revision received)";
