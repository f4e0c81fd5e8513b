//! A VM node with a pure cgroup v2 hierarchy: qemu (software emulation)
//! boots Debian's kernel with the initramfs of `hack/vm/build-image`, on a
//! tap device in a test's network namespace, and its r8s-agent joins the
//! cluster with a bootstrap token (the test's cluster is an `e2e::kind`
//! control-plane node on its cluster network). Removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
