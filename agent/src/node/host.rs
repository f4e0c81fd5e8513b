//! Host facts for the Node object (cpu, memory, hugepages, disk, kernel, OS,
//! ids), read from /proc, /sys and /etc behind `HostInfo` so tests can fake them.

use std::io;
use std::path::{Path, PathBuf};

/// Why a host fact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no {field} in {path}")]
    Missing { field: &'static str, path: PathBuf },
    #[error("failed to statfs {path}")]
    Statfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// What the node reports about its machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// Logical CPUs.
    pub num_cpus: u32,
    /// MemTotal, bytes.
    pub memory_bytes: u64,
    /// Huge page pools: (page size bytes, number of pages).
    pub hugepages: Vec<(u64, u64)>,
    /// Size of the filesystem holding the root dir, bytes.
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    /// GOARCH spelling (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// GOOS spelling (`linux`).
    pub operating_system: String,
}

/// Source of host facts.
pub trait HostInfo: Send + Sync {
    fn facts(&self) -> Result<HostFacts>;
}

/// Maps Rust's target arch to Go's GOARCH, as the API expects.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Reads facts from the running system (paths overridable for tests).
#[derive(Debug, Clone)]
pub struct SystemHost {
    pub proc_dir: PathBuf,
    pub sys_dir: PathBuf,
    pub etc_dir: PathBuf,
    /// The agent's root dir; its filesystem is the node's ephemeral storage.
    pub root_dir: PathBuf,
}

impl SystemHost {
    /// The real host, with ephemeral storage measured at `root_dir`.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        Self {
            proc_dir: "/proc".into(),
            sys_dir: "/sys".into(),
            etc_dir: "/etc".into(),
            root_dir: root_dir.into(),
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Counts `processor` lines of /proc/cpuinfo.
pub fn parse_cpuinfo(text: &str) -> u32 {
    let n = text
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// MemTotal of /proc/meminfo, bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// PRETTY_NAME of os-release, unquoted; `Linux` when absent (as cadvisor).
pub fn parse_os_release(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".to_owned())
}

impl SystemHost {
    fn hugepages(&self) -> Vec<(u64, u64)> {
        let dir = self.sys_dir.join("kernel/mm/hugepages");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut pools: Vec<(u64, u64)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let kb: u64 = name
                    .strip_prefix("hugepages-")?
                    .strip_suffix("kB")?
                    .parse()
                    .ok()?;
                let count: u64 = std::fs::read_to_string(e.path().join("nr_hugepages"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((kb * 1024, count))
            })
            .collect();
        pools.sort_unstable();
        pools
    }

    fn ephemeral_storage(&self) -> Result<u64> {
        // The root dir may not exist yet: measure its nearest existing ancestor.
        let mut path = self.root_dir.as_path();
        while !path.exists() {
            match path.parent() {
                Some(p) => path = p,
                None => break,
            }
        }
        let st = nix::sys::statvfs::statvfs(path).map_err(|source| HostError::Statfs {
            path: path.to_owned(),
            source,
        })?;
        Ok(st.blocks().saturating_mul(st.fragment_size()))
    }

    fn first_readable(&self, paths: &[PathBuf]) -> String {
        paths
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }
}

impl HostInfo for SystemHost {
    fn facts(&self) -> Result<HostFacts> {
        let cpuinfo = read(&self.proc_dir.join("cpuinfo"))?;
        let meminfo_path = self.proc_dir.join("meminfo");
        let memory_bytes =
            parse_meminfo_total(&read(&meminfo_path)?).ok_or(HostError::Missing {
                field: "MemTotal",
                path: meminfo_path,
            })?;
        let os_image = self
            .first_readable(&[
                self.etc_dir.join("os-release"),
                PathBuf::from("/usr/lib/os-release"),
            ])
            .to_owned();
        Ok(HostFacts {
            num_cpus: parse_cpuinfo(&cpuinfo),
            memory_bytes,
            hugepages: self.hugepages(),
            ephemeral_storage_bytes: self.ephemeral_storage()?,
            kernel_version: read(&self.proc_dir.join("sys/kernel/osrelease"))?
                .trim()
                .to_owned(),
            os_image: parse_os_release(&os_image),
            machine_id: self.first_readable(&[
                self.etc_dir.join("machine-id"),
                PathBuf::from("/var/lib/dbus/machine-id"),
            ]),
            system_uuid: self.first_readable(&[self.sys_dir.join("class/dmi/id/product_uuid")]),
            boot_id: read(&self.proc_dir.join("sys/kernel/random/boot_id"))?
                .trim()
                .to_owned(),
            architecture: go_arch(std::env::consts::ARCH).to_owned(),
            operating_system: std::env::consts::OS.to_owned(),
        })
    }
}

/// Fixed facts for tests and simulated nodes.
#[derive(Debug, Clone)]
pub struct FakeHost(pub HostFacts);

impl HostInfo for FakeHost {
    fn facts(&self) -> Result<HostFacts> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:        8003444 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(8_003_444 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn cpuinfo_counts_processors() {
        let text = "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n";
        assert_eq!(parse_cpuinfo(text), 2);
    }

    #[test]
    fn os_release_pretty_name_is_unquoted() {
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(parse_os_release("NAME=x\n"), "Linux");
    }

    #[test]
    fn rust_arch_maps_to_goarch() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    #[test]
    fn system_host_reads_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let w = |p: &str, s: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(
            "proc/cpuinfo",
            "processor : 0\nprocessor : 1\nprocessor : 2\n",
        );
        w("proc/meminfo", "MemTotal: 1024 kB\n");
        w("proc/sys/kernel/osrelease", "6.1.0-test\n");
        w("proc/sys/kernel/random/boot_id", "b00t\n");
        w("etc/os-release", "PRETTY_NAME=\"Test OS\"\n");
        w("etc/machine-id", "m4ch1ne\n");
        w(
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "4\n",
        );
        w("sys/class/dmi/id/product_uuid", "ABC-DEF\n");
        let host = SystemHost {
            proc_dir: root.join("proc"),
            sys_dir: root.join("sys"),
            etc_dir: root.join("etc"),
            root_dir: root.join("agent/does/not/exist"),
        };
        let f = host.facts().unwrap();
        assert_eq!(f.num_cpus, 3);
        assert_eq!(f.memory_bytes, 1024 * 1024);
        assert_eq!(f.hugepages, vec![(2 << 20, 4)]);
        assert_eq!(f.kernel_version, "6.1.0-test");
        assert_eq!(f.os_image, "Test OS");
        assert_eq!(f.machine_id, "m4ch1ne");
        assert_eq!(f.system_uuid, "ABC-DEF");
        assert_eq!(f.boot_id, "b00t");
        assert_eq!(f.operating_system, "linux");
        assert!(f.ephemeral_storage_bytes > 0);
    }
}
