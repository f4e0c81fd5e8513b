//! r8s-e2e: a kind-like multi-node r8s cluster on this machine for a user
//! (`up`, `down`), and the init of its nodes (`node-init`, internal).

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use e2e::kind::{self, KindCluster, KindConfig, State};
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser, Debug)]
#[command(
    name = "r8s-e2e",
    version,
    about = "A kind-like multi-node r8s cluster on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a cluster (1 control plane + N workers) and leave it running in
    /// the background; prints the kubeconfig path.
    Up {
        /// Number of worker nodes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Where the test image layouts are cached.
        #[arg(long, default_value = "/var/cache/r8s/images")]
        images: PathBuf,
        /// Run the cluster in this process (what the background one does).
        #[arg(long, hide = true)]
        foreground: bool,
    },
    /// Stop the cluster of `up` and remove every trace of it (network
    /// namespaces, veths, mounts, cgroups, processes, directories), also of
    /// clusters whose owner died; clusters held by a running test are left.
    Down {
        /// Only clusters whose owner process is gone.
        #[arg(long)]
        stale: bool,
    },
    /// Internal: pid 1 of a node.
    #[command(hide = true)]
    NodeInit(kind::init::InitArgs),
}

fn base() -> PathBuf {
    PathBuf::from(kind::state::BASE_DIR)
}

fn up_log() -> PathBuf {
    base().join("up.log")
}

/// Whether `state`'s owner is an `r8s-e2e up` daemon.
fn owned_by_daemon(state: &State) -> bool {
    std::fs::read(format!("/proc/{}/cmdline", state.owner_pid))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .is_ok_and(|c| c.contains("r8s-e2e") && c.contains("--foreground"))
}

fn print_usage(state: &State) {
    let kc = state
        .kubeconfig
        .clone()
        .unwrap_or_else(|| state.dir.join("kubeconfig.yaml"));
    println!("cluster {} is up (owner pid {})", state.id, state.owner_pid);
    println!("kubeconfig: {}", kc.display());
    println!("  kubectl --kubeconfig {} get nodes -o wide", kc.display());
    println!("stop it with: hack/e2e down (or r8s-e2e down)");
}

/// Starts the background daemon and waits for its cluster.
fn up(workers: usize, images: PathBuf) -> anyhow::Result<()> {
    if let Some(s) = State::all(&base()).into_iter().find(owned_by_daemon) {
        print_usage(&s);
        return Ok(());
    }
    std::fs::create_dir_all(base())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(up_log())?;
    let mut child = Command::new("setsid")
        .arg(std::env::current_exe()?)
        .args(["up", "--foreground", "--workers", &workers.to_string()])
        .arg("--images")
        .arg(&images)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    eprintln!(
        "starting a cluster with {workers} workers (log: {})",
        up_log().display()
    );
    let pid = child.id();
    let state = e2e::wait_for("the cluster to be up", Duration::from_secs(300), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(anyhow::anyhow!(
                "r8s-e2e up exited with {status}; see {}",
                up_log().display()
            )));
        }
        State::all(&base())
            .into_iter()
            .find(|s| s.owner_pid == pid && base().join(&s.id).join("up").exists())
            .map(Ok)
    })??;
    print_usage(&state);
    Ok(())
}

/// The daemon: holds the cluster (and its API forwarder) until SIGTERM.
fn up_foreground(workers: usize, images: PathBuf) -> anyhow::Result<()> {
    // Blocked before any thread starts, so that every thread inherits it
    // and the signals wait for `sigwait` below.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block()?;
    let cluster = KindCluster::start(KindConfig {
        workers,
        images,
        ..KindConfig::default()
    })?;
    std::fs::write(cluster.dir.join("up"), b"")?;
    eprintln!("cluster {} up; waiting for SIGTERM", cluster.id);
    let sig = signals.wait()?;
    eprintln!("{sig:?}: removing cluster {}", cluster.id);
    drop(cluster);
    Ok(())
}

fn down(stale: bool) -> anyhow::Result<()> {
    for state in State::all(&base()) {
        if owned_by_daemon(&state) && !stale {
            eprintln!("stopping cluster {} (pid {})", state.id, state.owner_pid);
            if let Ok(pid) = i32::try_from(state.owner_pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = e2e::wait_for("the cluster to stop", Duration::from_secs(60), || {
                (!state.owner_alive()).then_some(())
            });
        } else if state.owner_alive() {
            eprintln!(
                "leaving cluster {}: its owner (pid {}) still runs",
                state.id, state.owner_pid
            );
            continue;
        }
        eprintln!("removing cluster {}", state.id);
        state.remove();
    }
    let _ = std::fs::remove_file(up_log());
    let _ = std::fs::remove_dir(base());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up {
            workers,
            images,
            foreground: false,
        } => up(workers, images),
        Cmd::Up {
            workers,
            images,
            foreground: true,
        } => up_foreground(workers, images),
        Cmd::Down { stale } => down(stale),
        Cmd::NodeInit(args) => kind::init::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("r8s-e2e: {e:#}");
            ExitCode::FAILURE
        }
    }
}
