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
use crate::pki;

/// The identity the in-process clients act as: the admin certificate's, as
/// `UserInfo::from_client_cert` reads it.
fn admin() -> UserInfo {
    let mut groups: Vec<String> = pki::ADMIN_GROUPS.iter().map(|g| g.to_string()).collect();
    groups.push("system:authenticated".into());
    UserInfo {
        username: pki::ADMIN_USER.into(),
        groups,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_clients_act_as_the_admin_certificates_user() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki::ensure(dir.path(), &["localhost".to_string()]).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pki.admin_cert_pem.as_bytes()).unwrap();
        assert_eq!(UserInfo::from_client_cert(&pem.contents), Some(admin()));
    }
}
