//! Leader election for the scheduler and controllers through a
//! coordination.k8s.io/v1 Lease in kube-system, as client-go's
//! `leaderelection` does (lease 15 s, renew deadline 10 s, retry 2 s):
//! work runs only while this process holds the lease, so several
//! r8s-server replicas on one etcd never run two schedulers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ControllerContext;

pub const LEASE_NAMESPACE: &str = "kube-system";
/// The lease of the controllers (kube-controller-manager's name).
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";
/// The lease of the scheduler (kube-scheduler's name).
pub const SCHEDULER_LEASE: &str = "kube-scheduler";

/// client-go's defaults as kube-controller-manager and kube-scheduler use them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("failed to read or write the lease")]
    Api(#[from] kube::Error),
}

/// `<hostname>_<uuid>`, unique per process.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "r8s".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

fn lease_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Whether the lease is held by someone else whose term has not expired.
fn held_by_other(lease: &Lease, id: &str, now: Timestamp) -> bool {
    let Some(spec) = lease.spec.as_ref() else {
        return false;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == id {
        return false;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(t) => t.0.as_second() + duration > now.as_second(),
        None => false,
    }
}

/// Acquires or renews the lease once; `Ok(true)` when this process holds it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    id: &str,
    timing: Timing,
) -> Result<bool, LeaderError> {
    let now = Timestamp::now();
    let existing = api.get_opt(name).await?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(LEASE_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(id.into()),
                lease_duration_seconds: Some(lease_seconds(timing.lease_duration)),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    if held_by_other(&lease, id, now) {
        return Ok(false);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(id) {
        spec.holder_identity = Some(id.into());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(lease_seconds(timing.lease_duration));
    spec.renew_time = Some(MicroTime(now));
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Gives the lease up on shutdown so a standby takes over at once
/// (client-go `ReleaseOnCancel`).
async fn release(api: &Api<Lease>, name: &str, id: &str) {
    let Ok(Some(mut lease)) = api.get_opt(name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(id) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    if let Err(err) = api.replace(name, &PostParams::default(), &lease).await {
        tracing::debug!(lease = name, %err, "failed to release the lease");
    }
}

/// Leases this process holds; shutdown waits for them to be released.
static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits (at most `timeout`) until every lease this process held has been
/// given up, so the API server keeps serving until the releases are through.
pub async fn wait_released(timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while HELD.load(std::sync::atomic::Ordering::SeqCst) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type GateKey = (&'static str, usize);

/// One election per lease and server: every controller sharing a lease
/// watches the same gate.
static GATES: OnceLock<Mutex<HashMap<GateKey, watch::Receiver<bool>>>> = OnceLock::new();

/// Whether this process leads lease `name`, as a watch; starts the
/// election on first use.
pub fn leader_gate(ctx: &ControllerContext, name: &'static str) -> watch::Receiver<bool> {
    let key = (name, Arc::as_ptr(&ctx.config) as usize);
    let gates = GATES.get_or_init(Mutex::default);
    let mut gates = gates.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rx) = gates.get(&key) {
        return rx.clone();
    }
    let (tx, rx) = watch::channel(false);
    tokio::spawn(elect(ctx.clone(), name, tx));
    gates.insert(key, rx.clone());
    rx
}

/// The election loop: acquire, renew until the renew deadline passes
/// without success, publish leadership on `leading`.
async fn elect(ctx: ControllerContext, name: &'static str, leading: watch::Sender<bool>) {
    let timing = Timing::default();
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), LEASE_NAMESPACE);
    let id = identity();
    loop {
        loop {
            match try_acquire_or_renew(&api, name, &id, timing).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => tracing::debug!(lease = name, %err, "failed to acquire the lease"),
            }
            tokio::select! {
                () = ctx.shutdown.cancelled() => return,
                () = tokio::time::sleep(timing.retry_period) => {}
            }
        }
        tracing::info!(lease = name, identity = %id, "became leader");
        HELD.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = leading.send(true);
        let mut last_renew = tokio::time::Instant::now();
        let stopping = loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break true,
                () = tokio::time::sleep(timing.retry_period) => {}
            }
            match try_acquire_or_renew(&api, name, &id, timing).await {
                Ok(true) => last_renew = tokio::time::Instant::now(),
                Ok(false) => break false,
                Err(err) => {
                    tracing::warn!(lease = name, %err, "failed to renew the lease");
                    if last_renew.elapsed() > timing.renew_deadline {
                        break false;
                    }
                }
            }
        };
        let _ = leading.send(false);
        if stopping {
            release(&api, name, &id).await;
            HELD.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        HELD.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(lease = name, "lost leadership");
    }
}

/// Runs `work` while this process holds lease `name` (always, when
/// `--leader-elect=false`). `work` gets a token cancelled when leadership
/// is lost or the server stops; it is started again on re-acquisition.
pub async fn run_when_leader<F, Fut>(ctx: ControllerContext, name: &'static str, work: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if !ctx.config.leader_elect {
        work(ctx.shutdown.child_token()).await;
        return;
    }
    let mut gate = leader_gate(&ctx, name);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            r = gate.wait_for(|leading| *leading) => if r.is_err() { return },
        }
        let token = ctx.shutdown.child_token();
        let task = tokio::spawn(work(token.clone()));
        tokio::select! {
            () = ctx.shutdown.cancelled() => {}
            _ = gate.wait_for(|leading| !*leading) => {}
        }
        token.cancel();
        let _ = task.await;
        if ctx.shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(holder: &str, renewed: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed}
        }))
        .unwrap()
    }

    #[test]
    fn a_fresh_lease_of_another_holder_blocks() {
        let now: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
        assert!(held_by_other(
            &lease("other", "2024-01-01T00:00:00.000000Z"),
            "me",
            now
        ));
        assert!(!held_by_other(
            &lease("me", "2024-01-01T00:00:00.000000Z"),
            "me",
            now
        ));
    }

    #[test]
    fn an_expired_or_released_lease_can_be_taken() {
        let now: Timestamp = "2024-01-01T00:00:20Z".parse().unwrap();
        assert!(!held_by_other(
            &lease("other", "2024-01-01T00:00:00.000000Z"),
            "me",
            now
        ));
        assert!(!held_by_other(
            &lease("", "2024-01-01T00:00:19.000000Z"),
            "me",
            now
        ));
    }

    #[test]
    fn identity_is_host_and_uuid() {
        let id = identity();
        let (_, uuid) = id.rsplit_once('_').unwrap();
        assert_eq!(uuid.len(), 36);
    }
}
