//! `hack/bench pods` (issue #4): pod start latency through the whole node
//! path on one host: a release `r8s-server --disable-agent` on a temp data
//! dir and a free port, and a standalone release `r8s-agent` (in-process
//! CRI, service proxy, DNS) joined to it by token, pulling busybox from a
//! local registry. For N bare pods (1, 10, 50): the time from `kubectl
//! apply` to all Running and, per pod, from apply to that pod Running
//! (seen on a `kubectl get pods --watch`), p50/p99; the agent's RSS and
//! CPU (user+sys from /proc/PID/stat) idle with 0 and with 50 pods.
//! Everything is removed at the end, also on failure (Drop guards). Needs
//! root.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use e2e::bench::{percentile, rss_mb};
use e2e::cleanup::NodeResources;
use e2e::kubectl::Kubectl;
use e2e::registry::Registry;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Pod start latency and idle cost of one r8s node")]
struct Args {
    /// Where hack/images/build keeps the test image layouts between runs.
    #[arg(long)]
    images: PathBuf,
    /// Pods per round.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 50])]
    rounds: Vec<usize>,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 20)]
    idle_seconds: u64,
}

/// A child process stopped with SIGTERM (then SIGKILL) on drop.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let stopped = e2e::wait_for(self.name, Duration::from_secs(30), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes what the node left on the host (after its processes are gone):
/// container processes by cgroup, mounts, veths and bridge, the proxy's
/// nftables table, cgroups.
struct HostCleanup(NodeResources);

impl Drop for HostCleanup {
    fn drop(&mut self) {
        self.0.remove_all();
    }
}

fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
    let file = std::fs::File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("failed to start {name}"))?;
    Ok(Proc { name, child })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    num(11) + num(12)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// RSS and CPU (percent of one core) of `pid` over `secs`.
fn idle_cost(pid: u32, secs: u64) -> (f64, f64) {
    let t0 = cpu_ticks(pid);
    let w = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let ticks = cpu_ticks(pid).saturating_sub(t0);
    let cpu = ticks as f64 / clock_ticks_per_second() as f64 / w.elapsed().as_secs_f64();
    (rss_mb(pid), cpu * 100.0)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// `kubectl get pods -l <selector> --watch -o json`: (when, name) of the
/// first time each pod is seen Running.
fn watch_running(
    kubectl: &Kubectl,
    selector: &str,
) -> anyhow::Result<(Child, mpsc::Receiver<(Instant, String)>)> {
    let mut child = kubectl
        .command(&["get", "pods", "-l", selector, "--watch", "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("kubectl must be installed")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("kubectl has no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stream =
            serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
        for pod in stream.flatten() {
            if pod["status"]["phase"] == "Running"
                && let Some(name) = pod["metadata"]["name"].as_str()
                && tx.send((Instant::now(), name.to_owned())).is_err()
            {
                return;
            }
        }
    });
    Ok((child, rx))
}

fn pods_manifest(round: &str, n: usize, image: &str) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": format!("{round}-{i}"), "labels": {"bench": round}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}],
                },
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// One round: applies N pods, waits until all are Running; per-pod times.
fn round(kubectl: &Kubectl, name: &str, n: usize, image: &str) -> anyhow::Result<Vec<Duration>> {
    let (mut watch, rx) = watch_running(kubectl, &format!("bench={name}"))?;
    // The watch lists first; give it time to be watching before the apply.
    std::thread::sleep(Duration::from_secs(1));
    let manifest = pods_manifest(name, n, image).to_string();
    let t0 = Instant::now();
    // A List: kubectl has no schema to validate it against.
    let applied = kubectl.ok(&["apply", "--validate=false", "-f", "-"], Some(&manifest));
    let mut running: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = t0 + Duration::from_secs(300);
    let result = applied.and_then(|_| {
        while running.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let (when, pod) = rx
                .recv_timeout(left)
                .with_context(|| format!("{} of {n} pods Running after 300 s", running.len()))?;
            running.entry(pod).or_insert(when - t0);
        }
        Ok(running.into_values().collect())
    });
    let _ = watch.kill();
    let _ = watch.wait();
    result
}

fn delete_round(kubectl: &Kubectl, name: &str) -> anyhow::Result<()> {
    kubectl.ok(
        &[
            "delete",
            "pods",
            "-l",
            &format!("bench={name}"),
            "--wait=true",
            "--timeout=180s",
        ],
        None,
    )?;
    Ok(())
}

/// The rounds and the idle figures, printed as they come.
fn measure(
    args: &Args,
    kubectl: &Kubectl,
    node: &str,
    registry: &Registry,
    agent: &mut Proc,
    server: &mut Proc,
) -> anyhow::Result<()> {
    e2e::wait_for("the node to be Ready", Duration::from_secs(90), || {
        let node = kubectl.get_json(&["get", "node", node]).ok()?;
        let ready = node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(5));
    let (rss, cpu) = idle_cost(agent.pid(), args.idle_seconds);
    println!(
        "r8s-agent idle, 0 pods: RSS {rss:.1} MB, CPU {cpu:.2}% of a core over {} s (r8s-server RSS {:.1} MB)",
        args.idle_seconds,
        rss_mb(server.pid())
    );
    let image = registry.busybox();
    // Pull once (image cached for every round, as the CRI bench).
    let warm = round(kubectl, "warmup", 1, &image)?;
    println!(
        "first pod (image pull included): Running after {}",
        ms(warm[0])
    );
    delete_round(kubectl, "warmup")?;
    for &n in &args.rounds {
        let name = format!("n{n}");
        let per_pod = round(kubectl, &name, n, &image)?;
        let all = per_pod.iter().max().copied().unwrap_or_default();
        println!(
            "{n} pods: all Running {} after apply; per pod p50 {} p99 {}",
            ms(all),
            ms(percentile(&per_pod, 50)),
            ms(percentile(&per_pod, 99))
        );
        if n == args.rounds.iter().copied().max().unwrap_or(n) {
            std::thread::sleep(Duration::from_secs(5));
            let (rss, cpu) = idle_cost(agent.pid(), args.idle_seconds);
            println!(
                "r8s-agent idle, {n} pods: RSS {rss:.1} MB, CPU {cpu:.2}% of a core over {} s",
                args.idle_seconds
            );
        }
        delete_round(kubectl, &name)?;
        std::thread::sleep(Duration::from_secs(2));
    }
    anyhow::ensure!(agent.running(), "r8s-agent exited");
    anyhow::ensure!(server.running(), "r8s-server exited");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(e2e::is_root(), "pods_bench needs root");
    let registry = Registry::start(&args.images)?;
    let dir = tempfile::Builder::new()
        .prefix("r8s-bench-pods")
        .tempdir()?;
    let d = dir.path();
    let n: u32 = rand::random();
    let hex = format!("{n:08x}");
    let pod_cidr = format!("10.249.{}.0/24", n % 250);
    let gateway = format!("10.249.{}.1", n % 250);
    let service_cidr = format!("10.{}.{}.0/24", 96 + (n >> 8) % 16, (n >> 12) % 256);
    let cluster_dns = format!("{}.10", service_cidr.trim_end_matches(".0/24"));
    let resources = NodeResources {
        dir: d.to_path_buf(),
        bridge: format!("r8sp{}", &hex[..7]),
        cgroup_root: format!("/r8s-bench-pods-{hex}"),
        nft_table: format!("r8sp{hex}"),
    };
    let _cleanup = HostCleanup(resources.clone());

    let port = e2e::free_port()?;
    let kubeconfig = d.join("kubeconfig.yaml");
    let mut server_cmd = Command::new(e2e::binary("r8s-server")?);
    server_cmd
        .arg("--data-dir")
        .arg(d.join("server"))
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
        ])
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .args(["--service-cluster-ip-range", &service_cidr])
        .args(["--cluster-cidr", &pod_cidr])
        .arg("--disable-agent");
    let mut server = spawn("r8s-server", server_cmd, &d.join("server.log"))?;
    let token_file = d.join("server/token");
    e2e::wait_for(
        "r8s-server's kubeconfig and token",
        Duration::from_secs(60),
        || (kubeconfig.exists() && token_file.exists()).then_some(()),
    )?;
    let token = std::fs::read_to_string(&token_file)?.trim().to_owned();
    let ca_hash = e2e::kind::ca_cert_hash(&d.join("server/tls/ca.crt"))?;

    let node = format!("bench-{hex}");
    let mut agent_cmd = Command::new(e2e::binary("r8s-agent")?);
    agent_cmd
        .args(["--server", &format!("https://127.0.0.1:{port}")])
        .args(["--token", &token, "--ca-cert-hash", &ca_hash])
        .args(["--hostname-override", &node, "--node-ip", "127.0.0.1"])
        .arg("--root-dir")
        .arg(d.join("agent"))
        .arg("--run-dir")
        .arg(d.join("run"))
        .arg("--pod-logs-dir")
        .arg(d.join("logs"))
        .args(["--cgroup-root", &resources.cgroup_root])
        .args(["--pod-cidr", &pod_cidr, "--pod-bridge", &resources.bridge])
        .args([
            "--address",
            "127.0.0.1",
            "--port",
            &e2e::free_port()?.to_string(),
        ])
        .args(["--cluster-cidr", &pod_cidr, "--cluster-dns", &cluster_dns])
        .args(["--nft-table", &resources.nft_table])
        .args(["--nodeport-addresses", &format!("{gateway}/32")])
        .args(["--kube-proxy-metrics-bind-address", "127.0.0.1:0"])
        .args(["--kube-proxy-healthz-bind-address", "127.0.0.1:0"])
        .args(["--flannel-backend", "none"])
        .args(["--eviction-hard", e2e::cluster::TEST_EVICTION_HARD])
        .env("R8S_LOG_LEVEL", "info");
    let mut agent = spawn("r8s-agent", agent_cmd, &d.join("agent.log"))?;
    let kubectl = Kubectl::new(&kubeconfig);

    let result = measure(&args, &kubectl, &node, &registry, &mut agent, &mut server);
    if let Err(err) = &result {
        eprintln!("failed: {err:#}");
        for log in ["agent.log", "server.log"] {
            let text = std::fs::read_to_string(d.join(log)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "{log} tail:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
    }
    // Pods first, so that the agent removes its containers; then the agent,
    // the server, and what is left on the host (HostCleanup, registry, dir).
    let _ = kubectl.run(
        &["delete", "pods", "--all", "--wait=true", "--timeout=120s"],
        None,
    );
    drop(agent);
    drop(server);
    result
}
