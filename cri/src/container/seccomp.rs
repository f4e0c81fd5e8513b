//! Seccomp of a container, from the CRI `SecurityProfile` (or the deprecated
//! `seccomp_profile_path`), as containerd's CRI chooses it: `RuntimeDefault` is
//! the default profile of moby/containerd (`profiles/seccomp/default.json`,
//! deny with EPERM, an allowlist, rules that depend on the capabilities),
//! `Localhost` an OCI `LinuxSeccomp` JSON file, `Unconfined` none. The chosen
//! profile goes into the OCI spec (`spec::build`) that libcontainer loads.
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use crate::proto;

/// Errors of choosing or loading a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unsupported seccomp profile {0:?}")]
    Unsupported(String),
    #[error("localhost seccomp profile has no path")]
    NoPath,
    #[error("cannot load seccomp profile {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decoding seccomp profile {path:?} failed")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Which profile a container runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    Unconfined,
    RuntimeDefault,
    /// An OCI `LinuxSeccomp` JSON file on the host.
    Localhost(PathBuf),
}

const LOCALHOST_PREFIX: &str = "localhost/";

/// The profile a request asks for: the `SecurityProfile` when present, else the
/// deprecated path field (`runtime/default`, `docker/default`, `unconfined`,
/// `localhost/<path>`); nothing asked means unconfined, as in containerd.
pub fn requested(
    profile: Option<&proto::SecurityProfile>,
    legacy_path: &str,
) -> Result<Profile, SeccompError> {
    if let Some(p) = profile {
        return match proto::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(proto::security_profile::ProfileType::RuntimeDefault) => Ok(Profile::RuntimeDefault),
            Ok(proto::security_profile::ProfileType::Unconfined) => Ok(Profile::Unconfined),
            Ok(proto::security_profile::ProfileType::Localhost) => {
                // The new field carries a bare path; containerd trims the old prefix anyway.
                let path = p
                    .localhost_ref
                    .strip_prefix(LOCALHOST_PREFIX)
                    .unwrap_or(&p.localhost_ref);
                if path.is_empty() {
                    Err(SeccompError::NoPath)
                } else {
                    Ok(Profile::Localhost(PathBuf::from(path)))
                }
            }
            Err(_) => Err(SeccompError::Unsupported(p.profile_type.to_string())),
        };
    }
    match legacy_path {
        "" | "unconfined" => Ok(Profile::Unconfined),
        "runtime/default" | "docker/default" => Ok(Profile::RuntimeDefault),
        other => match other.strip_prefix(LOCALHOST_PREFIX) {
            Some("") => Err(SeccompError::NoPath),
            Some(path) => Ok(Profile::Localhost(PathBuf::from(path))),
            None => Err(SeccompError::Unsupported(other.to_string())),
        },
    }
}

/// The seccomp section of a container's spec: `None` for unconfined and for
/// privileged containers (containerd never confines those); `caps` is the
/// container's bounding set, which unlocks the capability-gated rules.
pub fn for_container(
    profile: &Profile,
    privileged: bool,
    caps: &[Capability],
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    if privileged {
        return Ok(None);
    }
    let seccomp = match profile {
        Profile::Unconfined => return Ok(None),
        Profile::RuntimeDefault => default_profile(caps, std::env::consts::ARCH),
        Profile::Localhost(path) => load(path)?,
    };
    Ok(Some(for_libcontainer(seccomp)))
}

/// Loads an OCI `LinuxSeccomp` JSON profile.
pub fn load(path: &Path) -> Result<LinuxSeccomp, SeccompError> {
    let data = std::fs::read(path).map_err(|source| SeccompError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|source| SeccompError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// libcontainer 0.7 hands `SCMP_CMP_MASKED_EQ` to libseccomp as
/// `(arg & valueTwo) == value`, while the OCI spec (and runc) mean
/// `(arg & value) == valueTwo`: swap the two so profiles keep their meaning.
fn for_libcontainer(mut seccomp: LinuxSeccomp) -> LinuxSeccomp {
    let Some(mut syscalls) = seccomp.syscalls().clone() else {
        return seccomp;
    };
    for sc in &mut syscalls {
        let Some(mut args) = sc.args().clone() else {
            continue;
        };
        for a in &mut args {
            if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                let (mask, datum) = (a.value(), a.value_two().unwrap_or(0));
                *a = arg(a.index(), datum, Some(mask), a.op());
            }
        }
        sc.set_args(Some(args));
    }
    seccomp.set_syscalls(Some(syscalls));
    seccomp
}

/// One rule of the default profile, with moby's includes/excludes.
struct Rule {
    names: &'static [&'static str],
    /// `None` allows; `Some(errno)` fails with that errno.
    errno: Option<u32>,
    args: &'static [(usize, u64, LinuxSeccompOperator)],
    caps: &'static [&'static str],
    not_caps: &'static [&'static str],
    arches: &'static [&'static str],
    not_arches: &'static [&'static str],
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        errno: None,
        args: &[],
        caps: &[],
        not_caps: &[],
        arches: &[],
        not_arches: &[],
    }
}

const fn allow_with_cap(names: &'static [&'static str], cap: &'static [&'static str]) -> Rule {
    Rule {
        caps: cap,
        ..allow(names)
    }
}

const fn allow_on(names: &'static [&'static str], arches: &'static [&'static str]) -> Rule {
    Rule {
        arches,
        ..allow(names)
    }
}

const fn allow_if(
    names: &'static [&'static str],
    args: &'static [(usize, u64, LinuxSeccompOperator)],
) -> Rule {
    Rule {
        args,
        ..allow(names)
    }
}

/// Syscalls every container may make (moby's unconditional allowlist).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

use LinuxSeccompOperator::{ScmpCmpEq as EQ, ScmpCmpMaskedEq as MASKED_EQ, ScmpCmpNe as NE};

/// The namespace flags of clone(2) (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET):
/// without CAP_SYS_ADMIN, clone is allowed only when none is set.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;

/// The conditional rules of moby's default profile, in its order.
const RULES: &[Rule] = &[
    // ptrace and process_vm_* are harmless since kernel 4.8 (every kernel we run on).
    allow(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    // Every socket family but AF_VSOCK (40).
    allow_if(&["socket"], &[(0, 40, NE)]),
    // personality(2) only for the harmless personas: LINUX, LINUX32,
    // UNAME26, UNAME26|LINUX32, and the query 0xffffffff.
    allow_if(&["personality"], &[(0, 0x0, EQ)]),
    allow_if(&["personality"], &[(0, 0x8, EQ)]),
    allow_if(&["personality"], &[(0, 0x20000, EQ)]),
    allow_if(&["personality"], &[(0, 0x20008, EQ)]),
    allow_if(&["personality"], &[(0, 0xffff_ffff, EQ)]),
    allow_on(&["sync_file_range2", "swapcontext"], &["ppc64le"]),
    allow_on(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        &["arm", "arm64"],
    ),
    allow_on(&["arch_prctl"], &["amd64", "x32"]),
    allow_on(&["modify_ldt"], &["amd64", "x32", "x86"]),
    allow_on(
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        &["s390", "s390x"],
    ),
    allow_on(&["riscv_flush_icache"], &["riscv64"]),
    allow_with_cap(&["open_by_handle_at"], &["CAP_DAC_READ_SEARCH"]),
    allow_with_cap(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        &["CAP_SYS_ADMIN"],
    ),
    Rule {
        args: &[(0, CLONE_NAMESPACES, MASKED_EQ)],
        not_caps: &["CAP_SYS_ADMIN"],
        not_arches: &["s390", "s390x"],
        ..allow(&["clone"])
    },
    // s390 passes clone's flags second.
    Rule {
        args: &[(1, CLONE_NAMESPACES, MASKED_EQ)],
        arches: &["s390", "s390x"],
        not_caps: &["CAP_SYS_ADMIN"],
        ..allow(&["clone"])
    },
    // clone3's flags are behind a pointer: say ENOSYS so libcs fall back to clone.
    Rule {
        errno: Some(38),
        not_caps: &["CAP_SYS_ADMIN"],
        ..allow(&["clone3"])
    },
    allow_with_cap(&["reboot"], &["CAP_SYS_BOOT"]),
    allow_with_cap(&["chroot"], &["CAP_SYS_CHROOT"]),
    allow_with_cap(
        &["delete_module", "init_module", "finit_module"],
        &["CAP_SYS_MODULE"],
    ),
    allow_with_cap(&["acct"], &["CAP_SYS_PACCT"]),
    allow_with_cap(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        &["CAP_SYS_PTRACE"],
    ),
    allow_with_cap(&["iopl", "ioperm"], &["CAP_SYS_RAWIO"]),
    allow_with_cap(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &["CAP_SYS_TIME"],
    ),
    allow_with_cap(&["vhangup"], &["CAP_SYS_TTY_CONFIG"]),
    allow_with_cap(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        &["CAP_SYS_NICE"],
    ),
    allow_with_cap(&["syslog"], &["CAP_SYSLOG"]),
    allow_with_cap(&["bpf"], &["CAP_BPF"]),
    allow_with_cap(&["perf_event_open"], &["CAP_PERFMON"]),
];

/// Go's name of a Rust target architecture (moby's profile names arches so).
fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The seccomp architectures a native arch filters (moby's archMap).
fn architectures(rust_arch: &str) -> Vec<Arch> {
    match rust_arch {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => vec![Arch::ScmpArchNative],
    }
}

fn cap_name(cap: &Capability) -> String {
    // Capability serialises as its OCI name, "CAP_SYS_ADMIN".
    serde_json::to_value(cap)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// moby's default profile for a container with bounding set `caps` on `rust_arch`.
pub fn default_profile(caps: &[Capability], rust_arch: &str) -> LinuxSeccomp {
    let arch = go_arch(rust_arch);
    let cap_names: Vec<String> = caps.iter().map(cap_name).collect();
    let has_cap = |c: &&str| cap_names.iter().any(|n| n == c);
    let mut syscalls = vec![syscall(ALLOWED, None, &[])];
    for rule in RULES {
        let included = (rule.caps.is_empty() || rule.caps.iter().any(has_cap))
            && (rule.arches.is_empty() || rule.arches.contains(&arch));
        let excluded = rule.not_caps.iter().any(has_cap) || rule.not_arches.contains(&arch);
        if included && !excluded {
            syscalls.push(syscall(rule.names, rule.errno, rule.args));
        }
    }
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(LinuxSeccompAction::ScmpActErrno);
    seccomp.set_default_errno_ret(Some(1));
    seccomp.set_architectures(Some(architectures(rust_arch)));
    seccomp.set_syscalls(Some(syscalls));
    seccomp
}

fn syscall(
    names: &[&str],
    errno: Option<u32>,
    args: &[(usize, u64, LinuxSeccompOperator)],
) -> LinuxSyscall {
    let mut sc = LinuxSyscall::default();
    sc.set_names(names.iter().map(|n| n.to_string()).collect());
    match errno {
        None => {
            sc.set_action(LinuxSeccompAction::ScmpActAllow);
        }
        Some(e) => {
            sc.set_action(LinuxSeccompAction::ScmpActErrno);
            sc.set_errno_ret(Some(e));
        }
    }
    if !args.is_empty() {
        sc.set_args(Some(
            args.iter()
                .map(|&(index, value, op)| arg(index, value, None, op))
                .collect(),
        ));
    }
    sc
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Every field is set, so the builder cannot fail; the default is unreachable.
    b.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &LinuxSeccomp, name: &str) -> bool {
        p.syscalls().iter().flatten().any(|s| {
            s.action() == LinuxSeccompAction::ScmpActAllow
                && s.args().is_none()
                && s.names().iter().any(|n| n == name)
        })
    }

    #[test]
    fn default_profile_denies_with_eperm_and_allows_the_basics() {
        let p = default_profile(&[], "x86_64");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert!(allowed(&p, "read"));
        assert!(allowed(&p, "arch_prctl"));
        assert!(!allowed(&p, "unshare"));
        assert!(!allowed(&p, "mount"));
        assert!(!allowed(&p, "keyctl"));
        assert_eq!(
            p.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
    }

    #[test]
    fn sys_admin_unlocks_mount_and_unconditional_clone() {
        let p = default_profile(&[Capability::SysAdmin], "x86_64");
        assert!(allowed(&p, "mount"));
        assert!(allowed(&p, "unshare"));
        assert!(allowed(&p, "clone"));
        // No ENOSYS rule for clone3 then.
        assert!(
            !p.syscalls()
                .iter()
                .flatten()
                .any(|s| s.errno_ret() == Some(38))
        );
    }

    #[test]
    fn without_sys_admin_clone_is_limited_and_clone3_says_enosys() {
        let p = default_profile(&[], "x86_64");
        assert!(!allowed(&p, "clone"));
        let clone = p
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &vec!["clone".to_string()])
            .unwrap();
        let arg = &clone.args().clone().unwrap()[0];
        assert_eq!((arg.index(), arg.value()), (0, CLONE_NAMESPACES));
        assert!(
            p.syscalls()
                .iter()
                .flatten()
                .any(|s| s.names() == &vec!["clone3".to_string()] && s.errno_ret() == Some(38))
        );
    }

    #[test]
    fn arm64_gets_arm_rules_and_not_x86_ones() {
        let p = default_profile(&[], "aarch64");
        assert!(allowed(&p, "set_tls"));
        assert!(!allowed(&p, "arch_prctl"));
        assert_eq!(
            p.architectures().clone().unwrap(),
            vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
        );
    }

    #[test]
    fn masked_eq_is_swapped_for_libcontainer() {
        let p = for_libcontainer(default_profile(&[], "x86_64"));
        let clone = p
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &vec!["clone".to_string()])
            .unwrap();
        let arg = &clone.args().clone().unwrap()[0];
        assert_eq!(arg.value(), 0);
        assert_eq!(arg.value_two(), Some(CLONE_NAMESPACES));
    }

    #[test]
    fn requests_map_like_containerd() {
        use proto::security_profile::ProfileType;
        let sp = |t: ProfileType, r: &str| proto::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        };
        assert_eq!(requested(None, "").unwrap(), Profile::Unconfined);
        assert_eq!(
            requested(None, "runtime/default").unwrap(),
            Profile::RuntimeDefault
        );
        assert_eq!(
            requested(None, "docker/default").unwrap(),
            Profile::RuntimeDefault
        );
        assert_eq!(
            requested(None, "localhost//p.json").unwrap(),
            Profile::Localhost("/p.json".into())
        );
        assert!(requested(None, "bogus").is_err());
        assert_eq!(
            requested(Some(&sp(ProfileType::RuntimeDefault, "")), "unconfined").unwrap(),
            Profile::RuntimeDefault
        );
        assert_eq!(
            requested(Some(&sp(ProfileType::Localhost, "/p.json")), "").unwrap(),
            Profile::Localhost("/p.json".into())
        );
        assert!(requested(Some(&sp(ProfileType::Localhost, "")), "").is_err());
    }

    #[test]
    fn privileged_and_unconfined_get_no_filter() {
        assert!(
            for_container(&Profile::RuntimeDefault, true, &[])
                .unwrap()
                .is_none()
        );
        assert!(
            for_container(&Profile::Unconfined, false, &[])
                .unwrap()
                .is_none()
        );
        assert!(
            for_container(&Profile::RuntimeDefault, false, &[])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn localhost_profile_loads_oci_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        )
        .unwrap();
        let p = for_container(&Profile::Localhost(path), false, &[])
            .unwrap()
            .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(p.syscalls().clone().unwrap()[0].errno_ret(), Some(13));
        assert!(load(&dir.path().join("missing.json")).is_err());
    }
}
