//! nftables through Debian's libnftables, in-process: commands in nft syntax run as one
//! atomic transaction each, from a worker thread that lives in the chosen network
//! namespace. r8s-proxy programs Services with it, r8s-cri hostPorts, the agent the
//! masquerade of pod traffic leaving the cluster. `conntrack` deletes the UDP flows a rule
//! change leaves stale, over ctnetlink.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

pub mod conntrack;
pub mod elements;
pub mod sys;
mod wire;

use sys::{NftCtx, SysError};

/// Errors applying nftables commands.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The worker thread could not enter the network namespace.
    #[error("failed to enter network namespace {path}")]
    Setns {
        /// The namespace path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating the libnftables context failed.
    #[error("failed to create libnftables context")]
    Ctx(#[source] SysError),
    /// libnftables refused the transaction.
    #[error("failed to apply nftables transaction")]
    Apply(#[source] SysError),
    /// The worker thread is gone.
    #[error("nftables worker thread exited")]
    WorkerGone,
    /// A request over nf_tables netlink failed.
    #[error("nf_tables netlink: {op} failed")]
    Netlink {
        /// What was asked.
        op: &'static str,
        /// The cause (the kernel's errno, or the socket's).
        #[source]
        source: std::io::Error,
    },
}

/// The commands that delete `table` (family `ip`) whether it exists or not: `add table`
/// first, so that the `delete` cannot fail. Followed in the same transaction by the table's
/// new content, they replace it atomically.
pub fn delete_table_commands(table: &str) -> [String; 2] {
    [
        format!("add table ip {table}"),
        format!("delete table ip {table}"),
    ]
}

/// Work for the thread that lives in the namespace (with its libnftables context).
type Job = Box<dyn FnOnce(&mut NftCtx) + Send>;

/// libnftables on a dedicated thread.
pub struct LibNftables {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl LibNftables {
    /// An applier in the caller's network namespace.
    pub fn new() -> Result<Self, NftError> {
        Self::spawn(None)
    }

    /// An applier whose worker thread first enters the network namespace at `netns`
    /// (e.g. `/run/netns/NAME`); the rest of the process stays where it is.
    pub fn in_netns(netns: &Path) -> Result<Self, NftError> {
        Self::spawn(Some(netns.to_path_buf()))
    }

    fn spawn(netns: Option<PathBuf>) -> Result<Self, NftError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::Builder::new()
            .name("r8s-nft".into())
            .spawn(move || {
                let ctx =
                    enter(netns.as_deref()).and_then(|()| NftCtx::new().map_err(NftError::Ctx));
                let mut ctx = match ctx {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    job(&mut ctx);
                }
            })
            .map_err(|source| NftError::Setns {
                path: PathBuf::from("<thread spawn>"),
                source,
            })?;
        ready_rx.recv().map_err(|_| NftError::WorkerGone)??;
        Ok(Self {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `cmd` (nft syntax or JSON; several commands form one transaction) and returns
    /// its JSON output (e.g. of `list table ip r8s`).
    pub fn run(&self, cmd: &str) -> Result<String, NftError> {
        let cmd = cmd.to_string();
        self.on_worker(move |ctx| ctx.run(&cmd).map_err(NftError::Apply))
    }

    /// Adds set and map elements over netlink in one transaction ([`elements::ElementBatch`]).
    pub fn add_elements(&self, batch: Arc<elements::ElementBatch>) -> Result<(), NftError> {
        self.on_worker(move |_| {
            batch.apply().map_err(|source| NftError::Netlink {
                op: "add elements",
                source,
            })
        })
    }

    /// Whether table `name` (family `ip`) exists in the namespace.
    pub fn table_exists(&self, name: &str) -> Result<bool, NftError> {
        let name = name.to_string();
        self.on_worker(move |_| {
            elements::table_exists(&name).map_err(|source| NftError::Netlink {
                op: "get table",
                source,
            })
        })
    }

    fn on_worker<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut NftCtx) -> Result<T, NftError> + Send + 'static,
    ) -> Result<T, NftError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let job: Job = Box::new(move |ctx| {
            let _ = reply_tx.send(f(ctx));
        });
        self.jobs
            .lock()
            .map_err(|_| NftError::WorkerGone)?
            .send(job)
            .map_err(|_| NftError::WorkerGone)?;
        reply_rx.recv().map_err(|_| NftError::WorkerGone)?
    }
}

fn enter(netns: Option<&Path>) -> Result<(), NftError> {
    let Some(path) = netns else {
        return Ok(());
    };
    let err = |source| NftError::Setns {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| err(std::io::Error::from(e)))
}
