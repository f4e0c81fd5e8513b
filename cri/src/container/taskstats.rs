//! Exit statuses of processes that are not our children (containers re-adopted
//! after a restart), from the kernel's taskstats exit notifications (generic
//! netlink family `TASKSTATS`, registered for every CPU): the kernel sends each
//! exiting task's `ac_exitcode` (a wait status) to listeners, parent or not.
//! One listener thread starts on first use; `exit::watch` asks it.
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const TASKSTATS_CMD_GET: u8 = 1;
const TASKSTATS_CMD_ATTR_REGISTER_CPUMASK: u16 = 3;
const TASKSTATS_TYPE_PID: u16 = 1;
const TASKSTATS_TYPE_STATS: u16 = 3;
const TASKSTATS_TYPE_AGGR_PID: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;

/// Errors of setting up the listener.
#[derive(Debug, thiserror::Error)]
pub enum TaskstatsError {
    #[error("netlink socket failed")]
    Socket(#[source] nix::Error),
    #[error("the kernel has no TASKSTATS netlink family")]
    NoFamily,
    #[error("cannot read the possible cpus")]
    Cpus(#[source] std::io::Error),
    #[error("cannot start the listener thread")]
    Thread(#[source] std::io::Error),
    #[error("not in the initial pid namespace, where taskstats numbers pids")]
    PidNamespace,
}

/// Exit statuses seen, by pid (kept until taken; bounded).
struct Seen {
    statuses: HashMap<i32, i32>,
    wanted: std::collections::HashSet<i32>,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
static STARTED: OnceLock<bool> = OnceLock::new();

fn seen() -> std::sync::MutexGuard<'static, Option<Seen>> {
    // Plain maps: a panic under the lock leaves them consistent.
    SEEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts listening (once) and asks for the exit status of `pid`. Returns
/// false when taskstats is unavailable.
pub fn want(pid: i32) -> bool {
    let ok = *STARTED.get_or_init(|| match start() {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(
                ?err,
                "taskstats unavailable: exit codes of re-adopted containers are lost"
            );
            false
        }
    });
    if ok && let Some(s) = seen().as_mut() {
        s.wanted.insert(pid);
    }
    ok
}

/// The exit status (a wait status) of `pid`, once it was seen.
pub fn take(pid: i32) -> Option<i32> {
    let mut guard = seen();
    let s = guard.as_mut()?;
    let status = s.statuses.remove(&pid)?;
    s.wanted.remove(&pid);
    Some(status)
}

/// Stops waiting for `pid` (its status was not seen).
pub fn forget(pid: i32) {
    if let Some(s) = seen().as_mut() {
        s.wanted.remove(&pid);
        s.statuses.remove(&pid);
    }
}

/// The exit code a wait status means (128 + signal for a signal death).
pub fn exit_code(status: i32) -> i32 {
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        128 + (status & 0x7f)
    }
}

fn nl_attr(kind: u16, payload: &[u8], out: &mut Vec<u8>) {
    let len = 4 + payload.len();
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn genl_msg(family: u16, cmd: u8, attrs: &[u8], seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&family.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, 1, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// Iterates `(type, payload)` of the netlink attributes in `b`.
fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let head = b.get(i..i + 4)?;
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        let payload = b.get(i + 4..i + len.max(4))?;
        i += len.max(4).next_multiple_of(4);
        Some((kind, payload))
    })
}

/// Iterates the netlink messages `(type, body after the genl header)` in `b`.
fn messages(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let head = b.get(i..i + NLMSG_HDRLEN)?;
        let len = usize::try_from(u32::from_ne_bytes([head[0], head[1], head[2], head[3]])).ok()?;
        let kind = u16::from_ne_bytes([head[4], head[5]]);
        let body = b.get(i + NLMSG_HDRLEN + GENL_HDRLEN..i + len)?;
        i += len.max(NLMSG_HDRLEN).next_multiple_of(4);
        Some((kind, body))
    })
}

/// `(pid, wait status)` of a taskstats exit notification body.
fn exit_of(body: &[u8]) -> Option<(i32, i32)> {
    let (_, aggr) = attrs(body).find(|(k, _)| *k == TASKSTATS_TYPE_AGGR_PID)?;
    let mut pid = None;
    let mut status = None;
    for (k, v) in attrs(aggr) {
        match k {
            TASKSTATS_TYPE_PID => {
                pid = v
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            }
            // struct taskstats: u16 version, then u32 ac_exitcode at offset 4.
            TASKSTATS_TYPE_STATS => {
                status = v
                    .get(4..8)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            }
            _ => {}
        }
    }
    Some((pid?, status?))
}

fn family_id(sock: &OwnedFd) -> Result<u16, TaskstatsError> {
    let mut a = Vec::new();
    nl_attr(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0", &mut a);
    send(
        sock.as_raw_fd(),
        &genl_msg(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, &a, 1),
        MsgFlags::empty(),
    )
    .map_err(TaskstatsError::Socket)?;
    let mut buf = vec![0u8; 8192];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(TaskstatsError::Socket)?;
    messages(&buf[..n])
        .filter(|(k, _)| *k == GENL_ID_CTRL)
        .flat_map(|(_, body)| attrs(body).collect::<Vec<_>>())
        .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, v)| v.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])))
        .ok_or(TaskstatsError::NoFamily)
}

/// Whether our pids are the kernel's global ones (`NSpid` has one level).
fn in_initial_pid_namespace() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|pids| pids.split_whitespace().count() == 1)
    })
}

fn start() -> Result<(), TaskstatsError> {
    if !in_initial_pid_namespace() {
        return Err(TaskstatsError::PidNamespace);
    }
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkGeneric,
    )
    .map_err(TaskstatsError::Socket)?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(TaskstatsError::Socket)?;
    // Every exit on the host arrives here; a large buffer loses fewer.
    let _ = setsockopt(&sock, sockopt::RcvBuf, &(4 << 20));
    let family = family_id(&sock)?;
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(TaskstatsError::Cpus)?;
    let mut mask = cpus.trim().as_bytes().to_vec();
    mask.push(0);
    let mut a = Vec::new();
    nl_attr(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, &mask, &mut a);
    send(
        sock.as_raw_fd(),
        &genl_msg(family, TASKSTATS_CMD_GET, &a, 2),
        MsgFlags::empty(),
    )
    .map_err(TaskstatsError::Socket)?;
    *seen() = Some(Seen {
        statuses: HashMap::new(),
        wanted: std::collections::HashSet::new(),
    });
    std::thread::Builder::new()
        .name("taskstats".into())
        .spawn(move || listen(&sock, family))
        .map_err(TaskstatsError::Thread)?;
    Ok(())
}

fn listen(sock: &OwnedFd, family: u16) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            // Overrun by a burst of exits: some are lost, the rest still come.
            Err(nix::Error::ENOBUFS | nix::Error::EINTR) => continue,
            Err(err) => {
                tracing::warn!(?err, "taskstats listener stopped");
                return;
            }
        };
        for (kind, body) in messages(&buf[..n]) {
            if kind != family {
                continue;
            }
            if let Some((pid, status)) = exit_of(body)
                && let Some(s) = seen().as_mut()
                && s.wanted.contains(&pid)
            {
                s.statuses.insert(pid, status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_map_to_exit_codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
        assert_eq!(exit_code(0), 0);
    }

    #[test]
    fn exit_of_a_non_child_is_seen() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: taskstats needs root (CI runs it as root)");
            return;
        }
        // A grandchild, reparented away from us, that exits 3 when told.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("go");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let script = format!(
            "(read x < {}; exit 3) >/dev/null 2>&1 & echo $!",
            fifo.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(want(pid));
        std::fs::write(&fifo, "go\n").unwrap();
        let mut status = None;
        for _ in 0..200 {
            status = take(pid);
            if status.is_some() {
                break;
            }
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert_eq!(status.map(exit_code), Some(3));
    }
}
