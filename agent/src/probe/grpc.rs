//! gRPC probes (kubelet's `pkg/probe/grpc`): one `grpc.health.v1.Health/Check`
//! call with the probe's service name over plaintext HTTP/2; `SERVING` is
//! success. The two messages are declared here instead of pulling in a
//! health-service crate for them.

use std::time::Duration;

use super::Outcome;
use super::target::join_host_port;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

/// The proto name of a status, as Go's `String()` prints it.
fn status_name(status: i32) -> String {
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Unknown) => "UNKNOWN".to_owned(),
        Ok(ServingStatus::Serving) => "SERVING".to_owned(),
        Ok(ServingStatus::NotServing) => "NOT_SERVING".to_owned(),
        Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN".to_owned(),
        Err(_) => status.to_string(),
    }
}

/// The Check RPC path.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

async fn check(
    addr: &str,
    service: &str,
    timeout: Duration,
) -> Result<HealthCheckResponse, Outcome> {
    let secs = timeout.as_secs();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| {
            Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"))
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Err(_) => {
            return Err(Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {secs}s: context deadline exceeded"
            )));
        }
        Ok(Err(e)) => {
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            return Err(Outcome::Failure(format!(
                "error: failed to connect service at {addr:?}: {cause}"
            )));
        }
        Ok(Ok(c)) => c,
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    let rpc_error = |s: tonic::Status| match s.code() {
        tonic::Code::Unimplemented => Outcome::Failure(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            s.message()
        )),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {secs}s"
        )),
        _ => Outcome::Failure(format!(
            "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
            s.code(),
            s.message()
        )),
    };
    grpc.ready().await.map_err(|e| {
        Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"))
    })?;
    let call = grpc.unary(
        tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        }),
        http::uri::PathAndQuery::from_static(CHECK_PATH),
        tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
    );
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(Outcome::Failure(format!(
            "timeout: health rpc did not complete within {secs}s"
        ))),
        Ok(Err(s)) => Err(rpc_error(s)),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// Runs a gRPC health probe against `host:port`.
pub async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    match check(&addr, service, timeout).await {
        Err(outcome) => outcome,
        Ok(r) if r.status == ServingStatus::Serving as i32 => {
            Outcome::Success("service healthy".to_owned())
        }
        Ok(r) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            status_name(r.status)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use super::*;

    /// A Health service answering SERVING for "" and NOT_SERVING otherwise.
    #[derive(Clone)]
    struct Health;

    impl tonic::server::UnaryService<HealthCheckRequest> for Health {
        type Response = HealthCheckResponse;
        type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

        fn call(&mut self, req: tonic::Request<HealthCheckRequest>) -> Self::Future {
            let status = if req.get_ref().service.is_empty() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            std::future::ready(Ok(tonic::Response::new(HealthCheckResponse {
                status: status as i32,
            })))
        }
    }

    #[derive(Clone)]
    struct Router;

    impl tonic::server::NamedService for Router {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Router {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
        >;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                    HealthCheckResponse,
                    HealthCheckRequest,
                >::default());
                Ok(grpc.unary(Health, req).await)
            })
        }
    }

    const SECS: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn serving_is_success_and_other_statuses_fail() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream_listener(listener);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Router)
                .serve_with_incoming(incoming),
        );
        assert_eq!(
            probe("127.0.0.1", port, "", SECS).await,
            Outcome::Success("service healthy".to_owned())
        );
        assert_eq!(
            probe("127.0.0.1", port, "db", SECS).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".to_owned())
        );
        server.abort();
    }

    fn tokio_stream_listener(
        listener: tokio::net::TcpListener,
    ) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(listener, |l| async move {
            let next = l.accept().await.map(|(s, _)| s);
            Some((next, l))
        })
    }

    #[tokio::test]
    async fn refused_connections_fail() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let Outcome::Failure(msg) = probe("127.0.0.1", port, "", SECS).await else {
            panic!("not a failure");
        };
        assert!(
            msg.starts_with(&format!(
                "error: failed to connect service at \"127.0.0.1:{port}\""
            )),
            "{msg}"
        );
    }
}
