//! A VM node with a pure cgroup v2 hierarchy (qemu, software emulation)
//! joins a cluster by token and enforces a pod's memory limit through
//! cgroup v2. Slow: run alone with `hack/vm/run`.

use std::time::{Duration, Instant};

use e2e::kind::{KindCluster, KindConfig, network::PREFIX_LEN};
use e2e::kubectl::Kubectl;
use e2e::vm::{VmImage, VmNode, VmOptions};

/// The cluster the VM joins: a kind-like control-plane node (e2e::kind)
/// on a cluster network of its own, with the test images' registry.
fn cluster(images: &std::path::Path) -> anyhow::Result<KindCluster> {
    KindCluster::start(KindConfig {
        workers: 0,
        images: images.to_path_buf(),
        // Heartbeats of a node under software emulation can be late.
        node_monitor_grace_period: "60s".into(),
        ..KindConfig::default()
    })
}

fn node_ready(kubectl: &Kubectl, name: &str) -> Option<()> {
    let node = kubectl.get_json(&["get", "node", name]).ok()?;
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
        .then_some(())
}

#[test]
fn vm_node_with_pure_cgroup_v2_enforces_a_pod_memory_limit() -> anyhow::Result<()> {
    if !e2e::is_root() {
        eprintln!("skipped: needs root (qemu tap in a netns)");
        return Ok(());
    }
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("r8s-e2e-vm").tempdir()?;
    let image = VmImage::build(&work.path().join("image"))?;
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    let mut cluster = cluster(&cache)?;
    let ip = cluster.allocate_address()?;
    let net = cluster.network().clone();
    let kubectl = cluster.kubectl();
    let opts = VmOptions {
        netns: net.netns.clone(),
        bridge: net.bridge.clone(),
        ip_cidr: format!("{ip}/{PREFIX_LEN}"),
        gateway: net.gateway.to_string(),
        server_url: cluster.server_url(),
        token: cluster.join_token()?,
        ca_cert_hash: cluster.ca_cert_hash()?,
        registry: Some(cluster.registry_addr()),
        node_name: "vm-node".into(),
        memory_mb: 1024,
        cpus: 2,
    };
    let mut vm = VmNode::boot(&image, &opts, &work.path().join("serial.log"))?;
    let failure = |what: &str, vm: &VmNode| {
        format!(
            "{what}\n--- serial console ---\n{}\n--- server ---\n{}",
            vm.serial_tail(60),
            cluster.logs_tail(30)
        )
    };

    let boot = Instant::now();
    // Ends early (with false) when qemu exits.
    let ready = e2e::wait_for("the VM node to be Ready", Duration::from_secs(420), || {
        if !vm.is_running() {
            return Some(false);
        }
        node_ready(&kubectl, &opts.node_name).map(|()| true)
    });
    anyhow::ensure!(
        ready.is_ok_and(|r| r),
        failure("the VM node never became Ready", &vm)
    );
    eprintln!("vm: node Ready {:?} after boot", boot.elapsed());

    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "memory-limit"},
        "spec": {
            "nodeName": opts.node_name,
            "containers": [{
                "name": "c",
                // The VM's 127.0.0.1:5000 forwards to the suite's registry.
                "image": "127.0.0.1:5000/busybox:latest",
                "command": ["sleep", "3600"],
                "resources": {"limits": {"memory": "64Mi"}}
            }]
        }
    });
    kubectl.apply(&pod)?;
    let pod_start = Instant::now();
    let running = e2e::wait_for("the pod to run", Duration::from_secs(240), || {
        let p = kubectl.get_json(&["get", "pod", "memory-limit"]).ok()?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    anyhow::ensure!(running.is_ok(), failure("the pod never ran", &vm));
    eprintln!("vm: pod Running {:?} after apply", pod_start.elapsed());

    let max = kubectl.ok(
        &[
            "exec",
            "memory-limit",
            "--",
            "cat",
            "/sys/fs/cgroup/memory.max",
        ],
        None,
    )?;
    assert_eq!(max.trim(), "67108864", "memory.max inside the pod");
    let cgroups = kubectl.ok(
        &["exec", "memory-limit", "--", "cat", "/proc/self/cgroup"],
        None,
    )?;
    let lines: Vec<&str> = cgroups.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("0::"),
        "only the cgroup v2 line expected, got {cgroups:?}"
    );
    eprintln!(
        "vm: memory.max={} /proc/self/cgroup={}",
        max.trim(),
        cgroups.trim()
    );
    assert!(
        vm.serial_log()
            .contains("r8s-vm: mounts: cgroup2 /sys/fs/cgroup cgroup2"),
        "{}",
        failure("the VM did not mount cgroup2", &vm)
    );

    // A process that touches more than the limit is OOM-killed by the kernel.
    let hog = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "memory-hog"},
        "spec": {
            "nodeName": opts.node_name,
            "restartPolicy": "Never",
            "containers": [{
                "name": "c",
                "image": "127.0.0.1:5000/busybox:latest",
                "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
                "resources": {"limits": {"memory": "64Mi"}}
            }]
        }
    });
    kubectl.apply(&hog)?;
    let terminated = e2e::wait_for("the memory hog to end", Duration::from_secs(180), || {
        let p = kubectl.get_json(&["get", "pod", "memory-hog"]).ok()?;
        let t = p["status"]["containerStatuses"][0]["state"]["terminated"].clone();
        (!t.is_null()).then_some(t)
    });
    let terminated = terminated.map_err(|e| anyhow::anyhow!(failure(&e.to_string(), &vm)))?;
    assert_eq!(terminated["reason"], "OOMKilled", "{terminated}");
    assert_eq!(terminated["exitCode"], 137, "{terminated}");
    eprintln!("vm: memory hog terminated: {terminated}");
    let serial = vm.serial_log();
    for line in serial
        .lines()
        .filter(|l| l.starts_with("r8s-vm:") || l.contains("joined the cluster"))
    {
        eprintln!("vm serial: {line}");
    }
    eprintln!("vm: whole test {:?}", started.elapsed());
    drop(vm);
    drop(cluster);
    Ok(())
}
