//! Single-use URL tokens for streaming requests, as kubelet's CRI streaming
//! server keeps them (k8s.io/kubelet/pkg/cri/streaming/request_cache.go):
//! 8 random bytes, URL-safe base64, valid for one minute, at most 1000 in flight.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use tokio::time::Instant;

use crate::proto;

/// How long a returned URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most requests waiting for their client at once.
pub const MAX_IN_FLIGHT: usize = 1000;

/// A request waiting for its streaming client.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamRequest {
    Exec(proto::ExecRequest),
    Attach(proto::AttachRequest),
    PortForward(proto::PortForwardRequest),
}

impl StreamRequest {
    /// URL path segment of this request kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exec(_) => "exec",
            Self::Attach(_) => "attach",
            Self::PortForward(_) => "portforward",
        }
    }
}

/// Errors of the request cache.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("maximum number of in-flight requests exceeded")]
    TooManyInFlight,
}

/// The in-memory token table.
pub struct RequestCache {
    entries: Mutex<HashMap<String, (Instant, StreamRequest)>>,
}

impl Default for RequestCache {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

fn new_token() -> String {
    let bytes: [u8; 8] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl RequestCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, StreamRequest)>> {
        // Nothing panics under this lock; a poisoned table is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `request` and returns its token.
    pub fn insert(&self, request: StreamRequest) -> Result<String, TokenError> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (expires, _)| *expires > now);
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(TokenError::TooManyInFlight);
        }
        let mut token = new_token();
        while entries.contains_key(&token) {
            token = new_token();
        }
        entries.insert(token.clone(), (now + TOKEN_TTL, request));
        Ok(token)
    }

    /// Takes the request of `token` out; `None` if unknown, used or expired.
    pub fn consume(&self, token: &str) -> Option<StreamRequest> {
        let (expires, request) = self.lock().remove(token)?;
        (expires > Instant::now()).then_some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> StreamRequest {
        StreamRequest::Exec(proto::ExecRequest {
            container_id: "c1".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn token_is_single_use() {
        let cache = RequestCache::default();
        let token = cache.insert(exec()).unwrap();
        assert_eq!(token.len(), 11);
        assert_eq!(cache.consume(&token), Some(exec()));
        assert_eq!(cache.consume(&token), None);
    }

    #[tokio::test(start_paused = true)]
    async fn token_expires_after_a_minute() {
        let cache = RequestCache::default();
        let fresh = cache.insert(exec()).unwrap();
        let stale = cache.insert(exec()).unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(cache.consume(&fresh).is_some());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(cache.consume(&stale), None);
    }

    #[tokio::test]
    async fn unknown_token_is_refused() {
        assert_eq!(RequestCache::default().consume("nope"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_are_bounded_until_they_expire() {
        let cache = RequestCache::default();
        for _ in 0..MAX_IN_FLIGHT {
            cache.insert(exec()).unwrap();
        }
        assert!(matches!(
            cache.insert(exec()),
            Err(TokenError::TooManyInFlight)
        ));
        tokio::time::advance(TOKEN_TTL + Duration::from_secs(1)).await;
        assert!(cache.insert(exec()).is_ok());
    }
}
