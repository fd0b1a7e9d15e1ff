//! Reads the request context from gRPC metadata, validated once per request.

use berth_core::{Namespace, RequestContext};
use berth_proto::{LEASE_HEADER, NAMESPACE_HEADER};
use tonic::{Request, Status};

/// The namespace and lease a request carries; a missing namespace is FailedPrecondition and a
/// malformed one InvalidArgument, as in containerd.
pub fn request_context<T>(req: &Request<T>) -> Result<RequestContext, Status> {
    let ns = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ns.is_empty() {
        return Err(Status::failed_precondition(
            "namespace is required: failed precondition",
        ));
    }
    let namespace = Namespace::new(ns).map_err(crate::error::to_status)?;
    let mut ctx = RequestContext::new(namespace);
    if let Some(lease) = req
        .metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|l| !l.is_empty())
    {
        ctx = ctx.with_lease(lease);
    }
    tracing::Span::current().record("namespace", ctx.namespace.as_str());
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_rules() {
        let req = Request::new(());
        assert_eq!(
            request_context(&req).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );

        let mut req = Request::new(());
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, "bad/ns".parse().unwrap());
        assert_eq!(
            request_context(&req).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );

        let mut req = Request::new(());
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, "k8s.io".parse().unwrap());
        req.metadata_mut()
            .insert(LEASE_HEADER, "123-abcd".parse().unwrap());
        let ctx = request_context(&req).unwrap();
        assert_eq!(ctx.namespace.as_str(), "k8s.io");
        assert_eq!(ctx.lease.as_deref(), Some("123-abcd"));
    }
}
