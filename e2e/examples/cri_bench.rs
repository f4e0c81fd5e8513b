//! `hack/bench cri` (issue #3): pod start latency and memory of r8s-cri
//! side by side with containerd (Debian's 1.6, with runc, then crun), all
//! driven by the same CRI client over each runtime's unix socket. For each
//! runtime: pull busybox once, one warm-up cycle, then N × (RunPodSandbox +
//! CreateContainer + StartContainer, then StopContainer + RemoveContainer +
//! StopPodSandbox + RemovePodSandbox); p50/p99 of the start part, of the
//! full cycle and of each call; RSS idle and with 20 running pods.
//! Everything started is stopped and every netns, veth, bridge, mount and
//! cgroup created is removed, also on failure (Drop guards). Needs root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cri::client::CriClient;
use cri::proto;
use e2e::bench::{percentile, rss_mb};
use e2e::cleanup::NodeResources;
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::registry::Registry;

#[derive(Parser, Debug)]
#[command(about = "CRI pod start latency: r8s-cri vs containerd (runc, crun)")]
struct Args {
    /// Cycles measured per runtime (after one warm-up cycle).
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Running pods for the "RSS with pods" figure.
    #[arg(long, default_value_t = 20)]
    pods: usize,
    /// Where hack/images/build keeps the test image layouts between runs.
    #[arg(long)]
    images: PathBuf,
    /// A registry already serving the test images (host:port); none: start one.
    #[arg(long, hide = true)]
    registry: Option<String>,
    /// Runtimes to measure: r8s-cri, containerd (runc), crun (containerd
    /// whose shims find crun as `runc`).
    #[arg(default_values_t = ["r8s-cri".to_owned(), "containerd".to_owned(), "crun".to_owned()])]
    runtimes: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(e2e::is_root(), "cri_bench needs root");
    let _registry;
    let registry = match &args.registry {
        Some(r) => r.clone(),
        None => {
            let r = Registry::start(&args.images)?;
            let addr = r.addr.clone();
            _registry = r;
            addr
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let n: u32 = rand::random();
    for (i, runtime) in args.runtimes.iter().enumerate() {
        let tag = format!("{:06x}{i}", n & 0xff_ffff);
        let result = match runtime.as_str() {
            "r8s-cri" => run_r8s_cri(&rt, &args, &registry, &tag),
            "containerd" => run_containerd(&rt, &args, &registry, &tag, "containerd+runc"),
            "containerd-crun" => run_containerd(&rt, &args, &registry, &tag, "containerd+crun"),
            "crun" => run_crun(&args, &registry),
            other => Err(anyhow::anyhow!("unknown runtime {other:?}")),
        };
        if let Err(err) = result {
            println!("{runtime}: FAILED: {err:#}");
        }
    }
    Ok(())
}

/// What one run measured.
struct Figures {
    pull: Duration,
    start: Vec<Duration>,
    cycle: Vec<Duration>,
    calls: BTreeMap<&'static str, Vec<Duration>>,
    rss_idle: f64,
    rss_pods: f64,
}

/// The calls of a cycle, in order (for the per-call line).
const CALLS: [&str; 7] = ["runp", "create", "start", "stop", "rm", "stopp", "rmp"];

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn report(label: &str, f: &Figures, iterations: usize, pods: usize, rss_note: &str) {
    println!(
        "{label}: {iterations} cycles; runp+create+start p50 {} p99 {}; full cycle p50 {} p99 {}; pull {}",
        ms(percentile(&f.start, 50)),
        ms(percentile(&f.start, 99)),
        ms(percentile(&f.cycle, 50)),
        ms(percentile(&f.cycle, 99)),
        ms(f.pull),
    );
    let calls: Vec<String> = CALLS
        .iter()
        .map(|c| {
            let v = f.calls.get(c).map(Vec::as_slice).unwrap_or_default();
            format!("{c} {}", ms(percentile(v, 50)))
        })
        .collect();
    println!("{label}: per call p50: {}", calls.join(", "));
    println!(
        "{label}: RSS idle {:.1} MB, with {pods} pods {:.1} MB{rss_note}",
        f.rss_idle, f.rss_pods
    );
}

/// The sandbox config the bench gives every pod: kubelet-like, with a pod
/// cgroup of its own below the run's cgroup root.
fn sandbox_config(name: &str, cgroup_root: &str, logs: &Path) -> proto::PodSandboxConfig {
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        dns_config: Some(proto::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: format!("{cgroup_root}/pod-{name}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(image: &str) -> proto::ContainerConfig {
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "c/0.log".into(),
        ..Default::default()
    }
}

/// Times one call into `calls`.
async fn timed<T, E, F>(
    calls: &mut BTreeMap<&'static str, Vec<Duration>>,
    name: &'static str,
    f: F,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    F: std::future::Future<Output = Result<T, E>>,
{
    let t = Instant::now();
    let out = f.await.with_context(|| name.to_owned())?;
    calls.entry(name).or_default().push(t.elapsed());
    Ok(out)
}

/// RunPodSandbox + CreateContainer + StartContainer; the sandbox id.
async fn start_pod(
    c: &CriClient,
    calls: &mut BTreeMap<&'static str, Vec<Duration>>,
    config: proto::PodSandboxConfig,
    image: &str,
) -> anyhow::Result<String> {
    let mut rt = c.runtime.clone();
    let pod = timed(
        calls,
        "runp",
        rt.run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await?
    .into_inner()
    .pod_sandbox_id;
    let container = timed(
        calls,
        "create",
        rt.create_container(proto::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(image)),
            sandbox_config: Some(config),
        }),
    )
    .await?
    .into_inner()
    .container_id;
    timed(
        calls,
        "start",
        rt.start_container(proto::StartContainerRequest {
            container_id: container.clone(),
        }),
    )
    .await?;
    Ok(pod)
}

/// StopContainer (timeout 0: SIGKILL, `sleep` ignores SIGTERM as pid 1) +
/// RemoveContainer + StopPodSandbox + RemovePodSandbox.
async fn remove_pod(
    c: &CriClient,
    calls: &mut BTreeMap<&'static str, Vec<Duration>>,
    pod: &str,
) -> anyhow::Result<()> {
    let mut rt = c.runtime.clone();
    let containers = rt
        .list_containers(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    for container in containers {
        timed(
            calls,
            "stop",
            rt.stop_container(proto::StopContainerRequest {
                container_id: container.id.clone(),
                timeout: 0,
            }),
        )
        .await?;
        timed(
            calls,
            "rm",
            rt.remove_container(proto::RemoveContainerRequest {
                container_id: container.id,
            }),
        )
        .await?;
    }
    timed(
        calls,
        "stopp",
        rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        }),
    )
    .await?;
    timed(
        calls,
        "rmp",
        rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        }),
    )
    .await?;
    Ok(())
}

/// The measurement, the same for every runtime. `rss` sums the runtime's
/// own processes (not the containers').
async fn bench(
    socket: &Path,
    image: &str,
    args: &Args,
    cgroup_root: &str,
    logs: &Path,
    rss: &dyn Fn() -> f64,
) -> anyhow::Result<Figures> {
    let c = cri::client::connect_path(socket).await?;
    let t = Instant::now();
    c.image
        .clone()
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("pull")?;
    let pull = t.elapsed();

    let mut warm = BTreeMap::new();
    let pod = start_pod(
        &c,
        &mut warm,
        sandbox_config("warmup", cgroup_root, logs),
        image,
    )
    .await?;
    remove_pod(&c, &mut warm, &pod).await?;

    let mut calls = BTreeMap::new();
    let mut start = Vec::new();
    let mut cycle = Vec::new();
    for i in 0..args.iterations {
        let config = sandbox_config(&format!("cycle-{i}"), cgroup_root, logs);
        std::fs::create_dir_all(&config.log_directory)?;
        let t = Instant::now();
        let pod = start_pod(&c, &mut calls, config, image).await?;
        start.push(t.elapsed());
        remove_pod(&c, &mut calls, &pod).await?;
        cycle.push(t.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss();

    let mut pods = Vec::new();
    let mut ignored = BTreeMap::new();
    for i in 0..args.pods {
        let config = sandbox_config(&format!("rss-{i}"), cgroup_root, logs);
        std::fs::create_dir_all(&config.log_directory)?;
        pods.push(start_pod(&c, &mut ignored, config, image).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_pods = rss();
    for pod in &pods {
        remove_pod(&c, &mut ignored, pod).await?;
    }
    Ok(Figures {
        pull,
        start,
        cycle,
        calls,
        rss_idle,
        rss_pods,
    })
}

/// Removes what a runtime left on the host when dropped (after the
/// runtime itself is gone): processes in its cgroups, mounts below its
/// directory, veths on its bridge and the bridge, its cgroups.
struct HostCleanup(NodeResources);

impl Drop for HostCleanup {
    fn drop(&mut self) {
        self.0.remove_all();
    }
}

/// A standalone release r8s-cri on a socket, dirs, bridge and cgroup
/// parent of its own; SIGTERM on drop.
struct R8sCri {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl R8sCri {
    fn start(dir: &Path, cgroup_parent: &str, bridge: &str, cidr: &str) -> anyhow::Result<Self> {
        let socket = dir.join("cri.sock");
        let log = dir.join("r8s-cri.log");
        let child = Command::new(e2e::binary("r8s-cri")?)
            .arg("--listen")
            .arg(&socket)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .args(["--cgroup-parent", cgroup_parent])
            .args(["--pod-cidr", cidr])
            .args(["--bridge", bridge])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("r8s-cri.err"))?)
            .spawn()
            .context("failed to start r8s-cri")?;
        let me = Self { child, socket, log };
        e2e::wait_for("r8s-cri's socket", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&me.socket).ok()
        })?;
        Ok(me)
    }
}

impl Drop for R8sCri {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let stopped = e2e::wait_for("r8s-cri to stop", Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_r8s_cri(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    registry: &str,
    tag: &str,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("r8s-bench-cri").tempdir()?;
    let cgroup_root = format!("/r8s-bench-{tag}");
    let _cleanup = HostCleanup(NodeResources {
        dir: dir.path().to_path_buf(),
        bridge: format!("r8sb{tag}"),
        cgroup_root: cgroup_root.clone(),
        nft_table: String::new(),
    });
    let cidr = format!("10.247.{}.0/24", rand::random::<u8>());
    let cri = R8sCri::start(dir.path(), &cgroup_root, &format!("r8sb{tag}"), &cidr)?;
    let pid = cri.child.id();
    let started = rss_mb(pid);
    let result = rt.block_on(bench(
        &cri.socket,
        &format!("{registry}/busybox:latest"),
        args,
        &cgroup_root,
        &dir.path().join("logs"),
        &|| rss_mb(pid),
    ));
    match result {
        Ok(f) => report(
            "r8s-cri",
            &f,
            args.iterations,
            args.pods,
            &format!(" (at start {started:.1} MB)"),
        ),
        Err(err) => {
            let log = std::fs::read_to_string(&cri.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "r8s-cri log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            return Err(err);
        }
    }
    Ok(())
}

/// containerd's pid and its shims' (`-address <socket>`).
fn containerd_rss(socket: &Path) -> (f64, usize, f64) {
    let address = socket.display().to_string();
    let config = socket.with_file_name("config.toml").display().to_string();
    let mut daemon = 0.0;
    let mut shims = 0;
    let mut shim_rss = 0.0;
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == b"-address" && w[1] == address.as_bytes())
        {
            shims += 1;
            shim_rss += rss_mb(pid);
        } else if args
            .windows(2)
            .any(|w| w[0] == b"--config" && w[1] == config.as_bytes())
        {
            daemon = rss_mb(pid);
        }
    }
    (daemon, shims, shim_rss)
}

fn run_containerd(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    registry: &str,
    tag: &str,
    label: &str,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("r8s-bench-ctd").tempdir()?;
    let cgroup_root = format!("/r8s-bench-{tag}");
    let bridge = format!("r8sc{tag}");
    // Dropped after containerd (declared before it).
    let _cleanup = HostCleanup(NodeResources {
        dir: dir.path().to_path_buf(),
        bridge: bridge.clone(),
        cgroup_root: cgroup_root.clone(),
        nft_table: String::new(),
    });
    let cidr = format!("10.248.{}.0/24", rand::random::<u8>());
    let containerd = Containerd::start(
        &dir.path().join("containerd"),
        &ContainerdOptions {
            registry,
            bridge: &bridge,
            pod_cidr: &cidr,
        },
    )?;
    let socket = containerd.socket();
    let (started, _, _) = containerd_rss(&socket);
    let result = rt.block_on(bench(
        &socket,
        &format!("{registry}/busybox:latest"),
        args,
        &cgroup_root,
        &dir.path().join("logs"),
        &|| {
            let (d, _, s) = containerd_rss(&socket);
            d + s
        },
    ));
    let (daemon, shims, shim_rss) = containerd_rss(&socket);
    match result {
        Ok(f) => report(
            label,
            &f,
            args.iterations,
            args.pods,
            &format!(
                " (containerd + shims; containerd at start {started:.1} MB; now {daemon:.1} MB + {shims} shims {shim_rss:.1} MB)"
            ),
        ),
        Err(err) => {
            eprintln!("containerd log tail:\n{}", containerd.log_tail(20));
            return Err(err);
        }
    }
    // containerd goes before the host cleanup (its Drop removes the sandboxes).
    drop(containerd);
    Ok(())
}

/// containerd whose shims run crun: this bench again in a child process
/// whose PATH finds crun as `runc` (the runc shim runs `runc` from PATH),
/// so that e2e's containerd config stays as it is.
fn run_crun(args: &Args, registry: &str) -> anyhow::Result<()> {
    let crun = Path::new("/usr/bin/crun");
    anyhow::ensure!(
        crun.exists(),
        "crun (Debian package crun) must be installed"
    );
    let shim_dir = tempfile::Builder::new()
        .prefix("r8s-bench-crun")
        .tempdir()?;
    std::os::unix::fs::symlink(crun, shim_dir.path().join("runc"))?;
    let path = format!(
        "{}:{}",
        shim_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new(std::env::current_exe()?)
        .arg("--images")
        .arg(&args.images)
        .args(["--registry", registry])
        .args(["--iterations", &args.iterations.to_string()])
        .args(["--pods", &args.pods.to_string()])
        .arg("containerd-crun")
        .env("PATH", path)
        .status()?;
    anyhow::ensure!(status.success(), "the crun run exited with {status}");
    Ok(())
}
