//! One node of a kind cluster: its network namespace on the cluster network,
//! an init (`r8s-e2e node-init`) that is pid 1 of a pid namespace of its own
//! with private mount, uts and ipc namespaces, and the node's process
//! (r8s-server or r8s-agent) started inside all of those, as on a host of
//! its own. Its directories live on the host under `<dir>` and appear at
//! r8s's default paths inside the node.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use super::init::InitArgs;
use super::netns;
use crate::cleanup::CgroupRoot;

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// r8s-server with its embedded agent.
    ControlPlane,
    /// r8s-agent, joined with a token.
    Worker,
}

/// Host directories of a node and where the node sees them.
const BINDS: [(&str, &str); 3] = [
    ("var-lib-r8s", "/var/lib/r8s"),
    ("etc-r8s", "/etc/r8s"),
    ("var-log-pods", "/var/log/pods"),
];
/// Volatile, like /run on a real host: empty after each boot.
const TMPFS: [&str; 1] = ["/run/r8s"];

/// A node: names and paths, and its init and process while it runs.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub role: Role,
    /// Its address on the cluster network.
    pub ip: Ipv4Addr,
    /// `r8s-e2e-<id>-<name>`.
    pub netns: String,
    /// The bridge end of its veth, in the cluster network namespace.
    pub link: String,
    /// Host directory holding the node's private directories and logs.
    pub dir: PathBuf,
    /// `--cgroup-root` of its pods.
    pub cgroup_root: String,
    init: Option<Child>,
    process: Option<Child>,
}

impl Node {
    pub fn new(id: &str, name: &str, role: Role, ip: Ipv4Addr, cluster_dir: &Path) -> Self {
        let prefix = super::prefix(id);
        Self {
            name: name.to_owned(),
            role,
            ip,
            netns: format!("{prefix}-{name}"),
            link: format!("veth{}", ip.octets()[3]),
            dir: cluster_dir.join(name),
            cgroup_root: format!("/{prefix}-{name}"),
            init: None,
            process: None,
        }
    }

    /// Where the node's `/var/lib/r8s` is on the host.
    pub fn var_lib_r8s(&self) -> PathBuf {
        self.dir.join("var-lib-r8s")
    }

    /// Where the node's `/etc/r8s` is on the host.
    pub fn etc_r8s(&self) -> PathBuf {
        self.dir.join("etc-r8s")
    }

    /// The log of the node's process (both starts appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    pub fn cgroups(&self) -> CgroupRoot {
        CgroupRoot(self.cgroup_root.clone())
    }

    /// The host pid of the node's init, while it runs.
    pub fn init_pid(&self) -> Option<u32> {
        self.init.as_ref().map(Child::id)
    }

    /// Whether the node's process (server or agent) runs.
    pub fn process_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the node's init in the node's network namespace (which must
    /// exist) and waits for its mounts.
    pub fn boot(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.init.is_none(), "node {} is running", self.name);
        std::fs::create_dir_all(&self.dir)?;
        let ready = self.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let args = InitArgs {
            hostname: self.name.clone(),
            binds: BINDS
                .iter()
                .map(|(src, dst)| format!("{}:{dst}", self.dir.join(src).display()))
                .collect(),
            tmpfs: TMPFS.iter().map(PathBuf::from).collect(),
            ready: ready.clone(),
        };
        let log = self.open_log("init.log")?;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--uts",
            "--ipc",
            "--propagation",
            "private",
            "--mount-proc",
            "--",
        ])
        .arg(crate::binary("r8s-e2e")?)
        .arg("node-init")
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let netns_file = std::fs::File::open(netns::path(&self.netns))
            .with_context(|| format!("network namespace {} is missing", self.netns))?;
        // unshare(CLONE_NEWPID) applies to the thread's next child, which
        // thus becomes pid 1 of the node.
        let child = std::thread::scope(|s| {
            s.spawn(move || -> anyhow::Result<Child> {
                nix::sched::setns(netns_file.as_fd(), CloneFlags::CLONE_NEWNET)?;
                nix::sched::unshare(CloneFlags::CLONE_NEWPID)?;
                cmd.spawn().context("failed to start unshare (util-linux)")
            })
            .join()
            .map_err(|_| anyhow::anyhow!("node start thread panicked"))?
        })?;
        self.init = Some(child);
        let waited = crate::wait_for(
            &format!("node {} to boot", self.name),
            Duration::from_secs(20),
            || {
                let exited = self
                    .init
                    .as_mut()
                    .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
                (ready.exists() || exited).then_some(())
            },
        );
        if let Err(e) = waited.and_then(|()| {
            anyhow::ensure!(
                ready.exists(),
                "node-init of {} exited: {}",
                self.name,
                std::fs::read_to_string(self.dir.join("init.log")).unwrap_or_default()
            );
            Ok(())
        }) {
            self.kill();
            return Err(e);
        }
        Ok(())
    }

    fn open_log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))?)
    }

    /// Opens `/proc/<init>/ns/pid` of the running node.
    fn pid_ns(&self) -> anyhow::Result<(u32, std::fs::File)> {
        let pid = self
            .init_pid()
            .ok_or_else(|| anyhow::anyhow!("node {} is not running", self.name))?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/pid"))
            .with_context(|| format!("node {} init is gone", self.name))?;
        Ok((pid, f))
    }

    /// `program args` inside every namespace of the node: a fork from a
    /// thread that joined the node's pid namespace runs `nsenter` for the
    /// others, which then execs the program in the same process.
    fn spawn_inside(
        &self,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        stdio: (Stdio, Stdio),
    ) -> anyhow::Result<Child> {
        let (pid, pid_ns) = self.pid_ns()?;
        let mut cmd = Command::new("nsenter");
        cmd.args([
            format!("--target={pid}"),
            "--mount".into(),
            "--uts".into(),
            "--ipc".into(),
            "--net".into(),
            "--".into(),
        ])
        .arg(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdio.0)
        .stderr(stdio.1);
        std::thread::scope(|s| {
            s.spawn(move || -> anyhow::Result<Child> {
                nix::sched::setns(pid_ns.as_fd(), CloneFlags::CLONE_NEWPID)?;
                cmd.spawn().context("failed to start nsenter (util-linux)")
            })
            .join()
            .map_err(|_| anyhow::anyhow!("node spawn thread panicked"))?
        })
    }

    /// Starts the node's process (its log appended to `node.log`).
    pub fn start_process(
        &mut self,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.process_running(),
            "node {} already runs its process",
            self.name
        );
        let log = self.open_log("node.log")?;
        let child =
            self.spawn_inside(program, args, envs, (log.try_clone()?.into(), log.into()))?;
        self.process = Some(child);
        Ok(())
    }

    /// Runs a short command inside the node and returns its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let child = self.spawn_inside(
            Path::new(program),
            &args,
            &[],
            (Stdio::piped(), Stdio::piped()),
        )?;
        Ok(child.wait_with_output()?)
    }

    /// Stops the node's process with `signal`, waiting up to `timeout`
    /// (then SIGKILL). Containers keep running.
    pub fn stop_process(
        &mut self,
        signal: Signal,
        timeout: Duration,
    ) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut child) = self.process.take() else {
            return Ok(None);
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let _ = nix::sys::signal::kill(pid, signal);
        let stopped = crate::wait_for(
            &format!("the process of {} to stop", self.name),
            timeout,
            || child.try_wait().ok().flatten(),
        );
        if stopped.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(Some(stopped?))
    }

    /// Kills the whole node: SIGKILL to its init kills every process of its
    /// pid namespace (containers included); waits for them all.
    pub fn kill(&mut self) {
        if let Some(init) = &self.init
            && let Ok(pid) = i32::try_from(init.id())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        // The init exits only once every process of its namespace is reaped,
        // ours included: reap the node's process first.
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(mut init) = self.init.take() {
            let _ = init.wait();
        }
    }

    /// The last `lines` of the node's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
