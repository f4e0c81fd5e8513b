//! r8s-agent: see the crate description; its issue builds this out.
