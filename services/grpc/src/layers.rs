//! Tower layers every request passes through: a tracing span and panic containment.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use tower::{Layer, Service};

/// The span a request runs in: its gRPC method and namespace; handlers record the object id.
pub fn request_span(req: &http::Request<()>) -> tracing::Span {
    let namespace = req
        .headers()
        .get(berth_proto::NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = req.uri().path(),
        namespace,
        id = tracing::field::Empty
    )
}

/// Turns a panic in a handler into an `Internal` status instead of a dropped connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// The service [`CatchPanicLayer`] makes.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for CatchPanic<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let fut = AssertUnwindSafe(self.inner.call(req)).catch_unwind();
        Box::pin(async move {
            match fut.await {
                Ok(result) => result,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    tracing::error!(method = %path, panic = %what, "handler panicked");
                    Ok(
                        tonic::Status::internal(format!("internal error in {path}: {what}"))
                            .into_http(),
                    )
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panic_becomes_internal_status() {
        let svc = tower::service_fn(|_req: http::Request<()>| async {
            if true {
                panic!("boom");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
        let mut svc = CatchPanicLayer.layer(svc);
        let resp = svc
            .call(http::Request::builder().uri("/x.Y/Z").body(()).unwrap())
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("boom"), "{}", status.message());
    }
}
