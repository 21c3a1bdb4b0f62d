//! What every call of a [`Client`](crate::Client) carries: the configured metadata (the
//! `authorization` token among it) and the current trace context, added by one interceptor in front
//! of the [`Endpoints`] transport.

use std::sync::Arc;

use tonic::{
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
};

use crate::{endpoints::Endpoints, trace};

/// A gRPC client stack with the client's interceptor in front of the channel.
pub(crate) type Transport = InterceptedService<Endpoints, CallInterceptor>;

/// Adds the configured metadata and the current trace context to every call.
#[derive(Clone)]
pub(crate) struct CallInterceptor {
    pub(crate) metadata: Arc<[(AsciiMetadataKey, AsciiMetadataValue)]>,
}

impl Interceptor for CallInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let map = request.metadata_mut();
        for (key, value) in self.metadata.iter() {
            map.insert(key.clone(), value.clone());
        }
        trace::inject(map);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientBuilder;

    #[test]
    fn every_call_carries_the_token_and_the_metadata() {
        let builder = ClientBuilder::new()
            .auth_token("s3cret")
            .metadata("x-tenant", "acme");
        let mut interceptor = CallInterceptor {
            metadata: builder.parsed_metadata().expect("valid metadata").into(),
        };
        let request = interceptor
            .call(tonic::Request::new(()))
            .expect("the interceptor never refuses");
        let metadata = request.metadata();
        assert_eq!(metadata.get("authorization").unwrap(), "Bearer s3cret");
        assert_eq!(metadata.get("x-tenant").unwrap(), "acme");
    }
}
