//! Thin process-level system calls used by the runtime. Those that need
//! `unsafe` (an ioctl nix has no safe wrapper for, adopting a received fd,
//! pidfd_open/pidfd_getfd) live here and nowhere else.
#![allow(unsafe_code)]
use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

pub(crate) fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Sets the window size of the terminal `fd`.
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is open for the duration of the call (borrowed) and `size`
    // is a valid winsize that TIOCSWINSZ only reads.
    unsafe { tiocswinsz(fd.as_raw_fd(), &size) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Registers `fd` with tokio's reactor.
pub(crate) fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open until dropped and its as_raw_fd never changes,
    // which is all `register` requires for the AsyncFd's lifetime.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Receives one file descriptor (SCM_RIGHTS) from the unix socket `sock`.
pub(crate) fn receive_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in our table for this
                // message; nothing else owns it, so adopting it is sound.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    received.ok_or_else(|| io::Error::other("no file descriptor received"))
}

fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("file descriptor out of range"))?;
    // SAFETY: the kernel just returned this new descriptor to us; nothing
    // else owns it, so adopting it is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A copy of descriptor `target` of process `pid` (pidfd_open(2) + pidfd_getfd(2)).
pub(crate) fn take_fd_of(pid: i32, target: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let pidfd = owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: pidfd_getfd takes an open pidfd (borrowed for the call), a
    // descriptor number and flags by value, and returns a new fd or -1.
    owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) })
}
