//! The process-wide allocator of every binary that runs containers.
//!
//! libcontainer starts container processes with a raw `clone`, which skips
//! glibc's fork handlers: a lock of glibc's malloc held by another thread at
//! that instant stays locked in the child, and the child's first allocation
//! hangs forever (seen as a fork stuck in `__lll_lock_wait_private`, blocking
//! the runtime's global libcontainer lock). mimalloc serves each thread from
//! its own heap without locks, so the cloned thread can allocate safely.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
