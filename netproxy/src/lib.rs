//! r8s-proxy: see the crate description; its issue builds this out.
