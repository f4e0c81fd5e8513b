//! A `kube::Client` whose requests go straight into this server's request
//! handler: the scheduler and controllers that run inside r8s-server speak
//! the same Kubernetes API as any client (authentication as the admin
//! certificate's user, authorization, admission, watch streams), without
//! loopback TLS, TCP and HTTP framing on both ends. `hack/bench scheduler`
//! and `hack/bench api` spent a large part of the server's CPU there
//! (docs/benchmarks.md).
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderValue, Request, Response};

use super::{Api, dispatch};
use crate::auth::UserInfo;

/// The identity the in-process clients act as: the admin certificate's.
fn admin() -> UserInfo {
    UserInfo {
        username: "admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

/// A client of `api` as the admin user, sending `user_agent` (managedFields
/// name a request's manager after its product).
pub fn client(api: Arc<Api>, user_agent: &'static str) -> kube::Client {
    kube::Client::new(
        InProcess {
            api,
            user: admin(),
            user_agent: HeaderValue::from_static(user_agent),
        },
        "default",
    )
}

#[derive(Clone)]
struct InProcess {
    api: Arc<Api>,
    user: UserInfo,
    user_agent: HeaderValue,
}

impl tower::Service<Request<kube::client::Body>> for InProcess {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<kube::client::Body>) -> Self::Future {
        req.headers_mut()
            .entry(http::header::USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        let api = Arc::clone(&self.api);
        let user = self.user.clone();
        Box::pin(async move { Ok(dispatch::handle(api, Some(user), req).await) })
    }
}
