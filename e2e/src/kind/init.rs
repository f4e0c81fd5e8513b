//! The init of a kind node, pid 1 of the node's pid namespace (run as the
//! hidden `r8s-e2e node-init`): it puts the node's private directories over
//! r8s's default paths in the node's own mount namespace, sets the node's
//! hostname, says it is ready, then reaps orphans until it is killed (which
//! kills every process of the node, containers included).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use nix::mount::MsFlags;

/// `r8s-e2e node-init` arguments.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InitArgs {
    /// The node's hostname (its uts namespace is its own).
    #[arg(long)]
    pub hostname: String,
    /// `SRC:DST`: bind-mount host directory SRC over DST (created if missing).
    #[arg(long = "bind")]
    pub binds: Vec<String>,
    /// A fresh tmpfs on DST, as /run after a reboot.
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<PathBuf>,
    /// Written once the mounts are in place.
    #[arg(long)]
    pub ready: PathBuf,
}

impl InitArgs {
    /// The command line after `node-init`.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec!["--hostname".to_owned(), self.hostname.clone()];
        for b in &self.binds {
            out.extend(["--bind".to_owned(), b.clone()]);
        }
        for t in &self.tmpfs {
            out.extend(["--tmpfs".to_owned(), t.display().to_string()]);
        }
        out.extend(["--ready".to_owned(), self.ready.display().to_string()]);
        out
    }
}

fn bind(spec: &str) -> anyhow::Result<()> {
    let (src, dst) = spec
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--bind {spec:?}: expected SRC:DST"))?;
    std::fs::create_dir_all(src)?;
    std::fs::create_dir_all(dst)?;
    nix::mount::mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("failed to bind {src} on {dst}"))
}

fn tmpfs(dst: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    nix::mount::mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .with_context(|| format!("failed to mount a tmpfs on {}", dst.display()))
}

/// Sets the node up, then reaps children forever.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::getpid().as_raw() == 1,
        "node-init must be pid 1 of a new pid namespace"
    );
    for spec in &args.binds {
        bind(spec)?;
    }
    for dst in &args.tmpfs {
        tmpfs(dst)?;
    }
    nix::unistd::sethostname(&args.hostname).context("failed to set the hostname")?;
    std::fs::write(&args.ready, b"ready\n")?;
    loop {
        match nix::sys::wait::waitpid(None, None) {
            Err(nix::errno::Errno::ECHILD) => std::thread::sleep(Duration::from_millis(500)),
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}
