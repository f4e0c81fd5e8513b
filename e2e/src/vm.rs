//! A VM node with a pure cgroup v2 hierarchy: qemu (software emulation)
//! boots Debian's kernel with the initramfs of `hack/vm/build-image`, on a
//! tap device in a test's network namespace, and its r8s-agent joins the
//! cluster with a bootstrap token. Also the small cluster network the VM
//! test uses (`VmNetwork`, `NetnsServer`): a netns with a bridge, and
//! r8s-server inside it. Everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The VM's boot files.
#[derive(Debug, Clone)]
pub struct VmImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl VmImage {
    /// Builds the boot files into `out` with `hack/vm/build-image` and the
    /// r8s-agent next to the test executable (the kernel is cached between runs).
    pub fn build(out: &Path) -> anyhow::Result<Self> {
        let status = Command::new(crate::repo_root().join("hack/vm/build-image"))
            .arg(crate::binary("r8s-agent")?)
            .arg(out)
            .status()
            .context("failed to run hack/vm/build-image")?;
        anyhow::ensure!(status.success(), "hack/vm/build-image failed");
        Ok(Self {
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.img"),
        })
    }
}

/// How one VM node boots and joins.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// The network namespace qemu runs in (its tap goes there).
    pub netns: String,
    /// The bridge in `netns` the tap is attached to.
    pub bridge: String,
    /// The VM's eth0 address with prefix, e.g. `10.99.0.2/24`.
    pub ip_cidr: String,
    pub gateway: String,
    /// `https://HOST:6443`.
    pub server_url: String,
    /// A bootstrap token, `<id>.<secret>`.
    pub token: String,
    /// `sha256:<hex>` of the cluster CA's public key.
    pub ca_cert_hash: String,
    /// A plain-HTTP registry (`host:port`) the VM's `127.0.0.1:5000` forwards to.
    pub registry: Option<String>,
    pub node_name: String,
    pub memory_mb: u32,
    pub cpus: u32,
}

impl VmOptions {
    /// The kernel command line: serial console, only cgroup v2, and the
    /// `r8s.*` parameters that hack/vm/init reads.
    pub fn kernel_cmdline(&self) -> String {
        let mut line = format!(
            "console=ttyS0 panic=-1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all \
             r8s.ip={} r8s.gw={} r8s.node={} r8s.server={} r8s.token={} r8s.cahash={}",
            self.ip_cidr,
            self.gateway,
            self.node_name,
            self.server_url,
            self.token,
            self.ca_cert_hash
        );
        if let Some(registry) = &self.registry {
            line.push_str(&format!(" r8s.registry={registry}"));
        }
        line
    }

    /// The VM's address without the prefix.
    pub fn ip(&self) -> &str {
        self.ip_cidr.split('/').next().unwrap_or(&self.ip_cidr)
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A running VM node. Dropping it kills qemu and removes the tap.
pub struct VmNode {
    child: Option<Child>,
    netns: String,
    tap: String,
    log: PathBuf,
}

impl VmNode {
    /// Creates a tap on `opts.bridge` in `opts.netns` and boots qemu there;
    /// the serial console goes to `log`.
    pub fn boot(image: &VmImage, opts: &VmOptions, log: &Path) -> anyhow::Result<Self> {
        let n: u32 = rand::random();
        let mut node = Self {
            child: None,
            netns: opts.netns.clone(),
            tap: format!("r8svt{n:08x}")[..13].to_owned(),
            log: log.to_path_buf(),
        };
        let ns = opts.netns.as_str();
        run(
            "ip",
            &["-n", ns, "tuntap", "add", "dev", &node.tap, "mode", "tap"],
        )?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "link",
                "set",
                &node.tap,
                "master",
                &opts.bridge,
                "up",
            ],
        )?;
        let serial = format!("file:{}", log.display());
        let netdev = format!("tap,id=n0,ifname={},script=no,downscript=no", node.tap);
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "qemu-system-x86_64"])
            .args(["-nographic", "-no-reboot", "-monitor", "none"])
            .args(["-m", &opts.memory_mb.to_string()])
            .args(["-smp", &opts.cpus.to_string()])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &opts.kernel_cmdline()])
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0"])
            .args(["-serial", &serial])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("qemu-system-x86_64 (Debian package qemu-system-x86) must be installed")?;
        node.child = Some(child);
        Ok(node)
    }

    /// Everything the VM wrote to its serial console so far.
    pub fn serial_log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `lines` lines of the serial console (for failure messages).
    pub fn serial_tail(&self, lines: usize) -> String {
        let text = self.serial_log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether qemu is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for VmNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run("ip", &["-n", &self.netns, "link", "del", &self.tap]);
    }
}

/// The VM test's cluster network: a netns of its own with a bridge whose
/// `.1` address is the gateway, where r8s-server and the registry listen.
pub struct VmNetwork {
    pub netns: String,
    pub bridge: String,
    /// e.g. `10.99.0` (the /24's first three octets).
    prefix: String,
}

impl VmNetwork {
    pub fn create() -> anyhow::Result<Self> {
        let n: u32 = rand::random();
        let net = Self {
            netns: format!("r8s-vm-{n:08x}"),
            bridge: format!("r8svb{n:08x}")[..13].to_owned(),
            prefix: format!("10.{}.{}", 100 + n % 100, (n >> 8) % 256),
        };
        run("ip", &["netns", "add", &net.netns])?;
        let ns = net.netns.as_str();
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", ns, "link", "add", &net.bridge, "type", "bridge"],
        )?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &net.gateway_cidr(),
                "dev",
                &net.bridge,
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// The bridge's address, where the server and the registry listen.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    fn gateway_cidr(&self) -> String {
        format!("{}/24", self.gateway())
    }

    /// The `n`th node address with its prefix (`n` from 2).
    pub fn node_cidr(&self, n: u8) -> String {
        format!("{}.{n}/24", self.prefix)
    }
}

impl Drop for VmNetwork {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

/// r8s-server without an agent, inside a netns, bound to `address`:6443.
pub struct NetnsServer {
    child: Option<Child>,
    netns: String,
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl NetnsServer {
    pub fn start(netns: &str, address: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("r8s-e2e-vm").tempdir()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut server = Self {
            child: None,
            netns: netns.to_owned(),
            url: format!("https://{address}:6443"),
            dir,
        };
        let d = server.dir.path();
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(crate::binary("r8s-server")?)
            .arg("--data-dir")
            .arg(d.join("server"))
            .args(["--bind-address", address, "--advertise-address", address])
            .args(["--secure-port", "6443", "--disable-agent"])
            .arg("--write-kubeconfig")
            .arg(server.kubeconfig())
            .env("R8S_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start r8s-server")?;
        server.child = Some(child);
        crate::wait_for("the kubeconfig", Duration::from_secs(60), || {
            server.kubeconfig().exists().then_some(())
        })?;
        crate::wait_for("the API", Duration::from_secs(60), || {
            server.kubectl_ok(&["get", "--raw", "/readyz"], None).ok()
        })?;
        Ok(server)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The first join token (`<data-dir>/token`).
    pub fn token(&self) -> anyhow::Result<String> {
        let path = self.dir.path().join("server/token");
        let token = crate::wait_for("the join token", Duration::from_secs(30), || {
            std::fs::read_to_string(&path).ok()
        })?;
        Ok(token.trim().to_owned())
    }

    /// The CA public key hash from the join command the server logs.
    pub fn ca_cert_hash(&self) -> anyhow::Result<String> {
        crate::wait_for(
            "the join command in the log",
            Duration::from_secs(30),
            || {
                let log = std::fs::read_to_string(self.log_path()).ok()?;
                let at = log.find("--ca-cert-hash sha256:")?;
                let hash: String = log[at + "--ca-cert-hash ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
                    .collect();
                Some(hash)
            },
        )
    }

    /// kubectl run inside the netns with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "kubectl", "--kubeconfig"])
            .arg(self.kubeconfig())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().context("kubectl must be installed")?;
        if let Some(text) = stdin
            && let Some(mut input) = child.stdin.take()
        {
            use std::io::Write;
            input.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.kubectl(args, stdin)?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl_ok(&all, None)?)?)
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> VmOptions {
        VmOptions {
            netns: "ns".into(),
            bridge: "br".into(),
            ip_cidr: "10.99.0.2/24".into(),
            gateway: "10.99.0.1".into(),
            server_url: "https://10.99.0.1:6443".into(),
            token: "abcdef.0123456789abcdef".into(),
            ca_cert_hash: "sha256:00ff".into(),
            registry: Some("10.99.0.1:5000".into()),
            node_name: "vm-1".into(),
            memory_mb: 1024,
            cpus: 2,
        }
    }

    #[test]
    fn kernel_cmdline_selects_only_cgroup_v2_and_carries_the_join_parameters() {
        let line = options().kernel_cmdline();
        for want in [
            "cgroup_no_v1=all",
            "systemd.unified_cgroup_hierarchy=1",
            "console=ttyS0",
            "r8s.ip=10.99.0.2/24",
            "r8s.gw=10.99.0.1",
            "r8s.server=https://10.99.0.1:6443",
            "r8s.token=abcdef.0123456789abcdef",
            "r8s.cahash=sha256:00ff",
            "r8s.registry=10.99.0.1:5000",
            "r8s.node=vm-1",
        ] {
            assert!(
                line.split(' ').any(|w| w == want),
                "{want} missing in {line}"
            );
        }
    }

    #[test]
    fn kernel_cmdline_omits_the_registry_when_there_is_none() {
        let line = VmOptions {
            registry: None,
            ..options()
        }
        .kernel_cmdline();
        assert!(!line.contains("r8s.registry"));
    }

    #[test]
    fn ip_strips_the_prefix() {
        assert_eq!(options().ip(), "10.99.0.2");
    }
}
