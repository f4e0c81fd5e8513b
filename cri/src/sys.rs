//! Thin process-level system calls used by the runtime (no unsafe needed: nix wraps them).
use std::io;

pub(crate) fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}
