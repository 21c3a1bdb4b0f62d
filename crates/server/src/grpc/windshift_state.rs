//! `windshift.state.v1alpha1.StateService` (EnsureStore, Get, Set, Delete): thin handlers over
//! `jetway_core::state`; values are decoded in [`crate::codec::state`].

use jetway_api::windshift::state::v1alpha1::{
    self as ws, state_service_server::StateService as WindshiftStateService,
};
use jetway_core::{
    Error, Nats,
    state::{self as core, Write},
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::{
    auth::{Caller, Permission},
    codec::state::decode,
    grpc::status::ToStatus,
};

/// The Windshift state service.
#[derive(Clone)]
pub struct WindshiftState {
    nats: Nats,
}

impl WindshiftState {
    /// A service over `nats`.
    pub fn new(nats: Nats) -> Self {
        WindshiftState { nats }
    }
}

#[tonic::async_trait]
impl WindshiftStateService for WindshiftState {
    async fn ensure_store(
        &self,
        request: Request<ws::EnsureStoreRequest>,
    ) -> Result<Response<ws::EnsureStoreResponse>, Status> {
        let caller = Caller::of(&request)?;
        let store = request.into_inner().store;
        caller.check(Permission::StateWrite, &store)?;
        core::ensure_store(&self.nats, &store)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ws::EnsureStoreResponse {}))
    }

    async fn get(
        &self,
        request: Request<ws::GetRequest>,
    ) -> Result<Response<ws::GetResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::StateRead, &request.store)?;
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
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::StateWrite, &request.store)?;
        let value = request
            .value
            .ok_or_else(|| Error::invalid("value", "is required").to_status())?;
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
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::StateWrite, &request.store)?;
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
