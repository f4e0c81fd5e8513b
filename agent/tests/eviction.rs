//! Node-pressure eviction end to end: r8s-server (no embedded agent) and an
//! r8s-agent with the FAKE runtime whose `--root-dir` is a small tmpfs.
//! Filling the tmpfs past `--eviction-hard=nodefs.available<8Mi` sets
//! DiskPressure (and the server's disk-pressure taint), evicts the running
//! BestEffort pod with kubelet's status, condition and event, rejects a new
//! pod at admission, and the condition clears after the transition period.
//! Then a pod whose emptyDir outgrows its `sizeLimit` is evicted at once,
//! without any node pressure (kubelet's local storage limits).
//! Needs root for the tmpfs mount (CI is root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// Kills a process and waits for it on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Unmounts a tmpfs on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Env {
    dir: PathBuf,
}

impl Env {
    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl must be installed");
        if let Some(mut input) = child.stdin.take() {
            use std::io::Write;
            input
                .write_all(stdin.unwrap_or_default().as_bytes())
                .expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n--- agent log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log("agent.log")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl(&all, None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        e2e::wait_for(what, Duration::from_secs(90), &mut f).unwrap_or_else(|e| {
            panic!(
                "{e}\n--- agent log ---\n{}\n--- server log ---\n{}",
                self.log("agent.log"),
                self.log("server.log")
            )
        })
    }
}

fn condition(node: &Value, kind: &str) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

fn pod(name: &str, node: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "web", "image": "busybox"}]
        }
    })
    .to_string()
}

fn start(bin: &str, args: &[&str], dir: &Path, log: &str) -> Process {
    let file = std::fs::File::create(dir.join(log)).expect("log file");
    let child = Command::new(e2e::binary(bin).expect("binary built"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("R8S_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start binary");
    Process(child)
}

#[test]
fn disk_pressure_evicts_the_best_effort_pod_and_rejects_new_ones() {
    if !e2e::is_root() {
        eprintln!("skipped: mounting the tmpfs root dir needs root (CI runs as root)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = Env {
        dir: tmp.path().to_path_buf(),
    };
    let root = env.dir.join("root");
    std::fs::create_dir_all(&root).expect("root dir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "r8s-eviction-test"])
        .arg(&root)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount tmpfs");
    let _tmpfs = Tmpfs(root.clone());

    let port = e2e::free_port().expect("port").to_string();
    let data = env.dir.join("data");
    let kubeconfig = env.kubeconfig();
    let _server = start(
        "r8s-server",
        &[
            "--data-dir",
            data.to_str().unwrap_or_default(),
            "--write-kubeconfig",
            kubeconfig.to_str().unwrap_or_default(),
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--disable-agent",
            "--secure-port",
            &port,
        ],
        &env.dir,
        "server.log",
    );
    env.wait_for("the server", || {
        (kubeconfig.exists()
            && env
                .kubectl(&["get", "--raw", "/readyz"], None)
                .status
                .success())
        .then_some(())
    });

    let node = format!("evict-{:08x}", rand::random::<u32>());
    let run = env.dir.join("run");
    let logs = env.dir.join("logs");
    let _agent = start(
        "r8s-agent",
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap_or_default(),
            "--hostname-override",
            &node,
            "--fake-runtime",
            "--disable-kube-proxy",
            "--node-ip",
            "127.0.0.1",
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--root-dir",
            root.to_str().unwrap_or_default(),
            "--run-dir",
            run.to_str().unwrap_or_default(),
            "--pod-logs-dir",
            logs.to_str().unwrap_or_default(),
            "--node-status-update-frequency",
            "1s",
            "--eviction-hard",
            "nodefs.available<8Mi",
            "--eviction-pressure-transition-period",
            "3s",
            "--eviction-monitoring-period",
            "500ms",
        ],
        &env.dir,
        "agent.log",
    );
    env.wait_for("the node without disk pressure", || {
        let n = env.json(&["get", "node", &node])?;
        let c = condition(&n, "DiskPressure")?;
        (c["status"] == "False" && c["reason"] == "KubeletHasNoDiskPressure").then_some(())
    });

    env.ok(&["apply", "-f", "-"], Some(&pod("web", &node)));
    env.wait_for("the pod to run", || {
        let p = env.json(&["get", "pod", "web"])?;
        (p["status"]["phase"] == "Running").then_some(())
    });

    // 10Mi of 16Mi taken: less than 8Mi left.
    let filler = root.join("filler");
    std::fs::write(&filler, vec![1u8; 10 << 20]).expect("fill the tmpfs");

    let n = env.wait_for("DiskPressure=True", || {
        let n = env.json(&["get", "node", &node])?;
        let c = condition(&n, "DiskPressure")?;
        (c["status"] == "True").then_some(n)
    });
    let c = condition(&n, "DiskPressure").unwrap_or_default();
    assert_eq!(c["reason"], "KubeletHasDiskPressure");
    assert_eq!(c["message"], "kubelet has disk pressure");

    let p = env.wait_for("the pod to be evicted", || {
        let p = env.json(&["get", "pod", "web"])?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    let message = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 8Mi, available: "
        ),
        "{message}"
    );
    let disruption = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
        .unwrap_or_default();
    assert_eq!(disruption["status"], "True", "{p}");
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    let event = env.wait_for("the Evicted event", || {
        let events = env.json(&["get", "events", "-n", "default"])?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "Evicted" && e["involvedObject"]["name"] == "web")
            .cloned()
    });
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["message"].as_str(), Some(message));

    // The node lifecycle controller taints the node; describe shows why.
    env.wait_for("the disk-pressure taint", || {
        let n = env.json(&["get", "node", &node])?;
        n["spec"]["taints"]
            .as_array()?
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/disk-pressure" && t["effect"] == "NoSchedule")
            .then_some(())
    });
    let described = env.ok(&["describe", "node", &node], None);
    assert!(
        described.contains("DiskPressure") && described.contains("KubeletHasDiskPressure"),
        "{described}"
    );

    // A new pod is rejected while the pressure lasts.
    env.ok(&["apply", "-f", "-"], Some(&pod("late", &node)));
    let p = env.wait_for("the new pod to be rejected", || {
        let p = env.json(&["get", "pod", "late"])?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: The node had condition: [DiskPressure]. "
    );

    // Space back: the condition clears after the transition period.
    std::fs::remove_file(&filler).expect("free the tmpfs");
    env.wait_for("DiskPressure=False again", || {
        let n = env.json(&["get", "node", &node])?;
        let c = condition(&n, "DiskPressure")?;
        (c["status"] == "False" && c["reason"] == "KubeletHasNoDiskPressure").then_some(())
    });
    // The evicted pod stays Failed: it is never restarted.
    let p = env.json(&["get", "pod", "web"]).unwrap_or_default();
    assert_eq!(p["status"]["phase"], "Failed");

    // An emptyDir over its sizeLimit: the pod is evicted without node pressure.
    let scratchy = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "scratchy", "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "web",
                "image": "busybox",
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]
            }],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}]
        }
    });
    env.ok(&["apply", "-f", "-"], Some(&scratchy.to_string()));
    let p = env.wait_for("the scratchy pod to run", || {
        let p = env.json(&["get", "pod", "scratchy"])?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
    let volume = root.join(format!(
        "pods/{uid}/volumes/kubernetes.io~empty-dir/scratch"
    ));
    // What the container would write. The fake runtime runs no process and
    // sets up no volumes: the dir is made here, where kubelet keeps it.
    std::fs::create_dir_all(&volume).expect("emptyDir dir");
    std::fs::write(volume.join("data"), vec![1u8; 2 << 20]).expect("fill the emptyDir");
    let p = env.wait_for("the scratchy pod to be evicted", || {
        let p = env.json(&["get", "pod", "scratchy"])?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    assert_eq!(
        p["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    let disruption = p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "DisruptionTarget"));
    assert!(
        !disruption,
        "kubelet adds no DisruptionTarget for local storage limits: {p}"
    );
    // Killed with its sandbox: terminated (status unknown), not restarted.
    let web = &p["status"]["containerStatuses"][0];
    assert_eq!(
        web["state"]["terminated"]["reason"], "ContainerStatusUnknown",
        "{p}"
    );
    assert_eq!(web["restartCount"], 0, "{p}");
    let n = env.json(&["get", "node", &node]).unwrap_or_default();
    assert_eq!(
        condition(&n, "DiskPressure").unwrap_or_default()["status"],
        "False",
        "no node pressure was involved"
    );
}
