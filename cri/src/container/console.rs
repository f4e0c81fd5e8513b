//! Keeps the console (pty master) of a tty container alive while r8s-cri is
//! down: closing the last master hangs the terminal up and SIGHUPs the
//! container. A holder process (`sleep infinity`, the master as its stdin, in
//! its own process group) keeps a copy, as containerd's shim and conmon hold
//! the console; a restarted runtime takes the master back with pidfd_getfd(2).
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Errors of console holders.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("failed to start the console holder")]
    Spawn(#[source] std::io::Error),
    #[error("process {0} is not a console holder")]
    NotAHolder(i32),
    #[error("failed to take the console from holder {pid}")]
    Take {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

/// Starts a holder of a copy of `master`; returns its pid.
pub fn spawn_holder(master: &OwnedFd) -> Result<i32, ConsoleError> {
    let copy = master.try_clone().map_err(ConsoleError::Spawn)?;
    let child = Command::new("sleep")
        .arg("infinity")
        .stdin(Stdio::from(copy))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Signals to the runtime's process group (^C, a unit stop) spare it.
        .process_group(0)
        .spawn()
        .map_err(ConsoleError::Spawn)?;
    let pid =
        i32::try_from(child.id()).map_err(|e| ConsoleError::Spawn(std::io::Error::other(e)))?;
    // Reaped by a watcher thread when it is killed at container removal.
    drop(super::exit::watch(pid));
    Ok(pid)
}

/// Takes the master back from holder `pid` (after a restart).
pub fn take(pid: i32) -> Result<OwnedFd, ConsoleError> {
    // A recycled pid must not hand us some other process's stdin.
    if !holds_a_pty(pid) {
        return Err(ConsoleError::NotAHolder(pid));
    }
    crate::sys::take_fd_of(pid, 0).map_err(|source| ConsoleError::Take { pid, source })
}

fn holds_a_pty(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/0"))
        .is_ok_and(|t| t.to_string_lossy().ends_with("ptmx"))
}

/// Stops holder `pid` (0: none).
pub fn kill_holder(pid: i32) {
    if pid > 0 && holds_a_pty(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_gives_back_the_same_terminal() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let pid = spawn_holder(&pty.master).unwrap();
        let back = take(pid).unwrap();
        drop(pty.master);
        // Writing to the slave is readable on the master taken back.
        nix::unistd::write(&pty.slave, b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&back, &mut buf).unwrap(), 1);
        assert_eq!(&buf, b"x");
        kill_holder(pid);
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(matches!(take(me), Err(ConsoleError::NotAHolder(_))));
    }
}
