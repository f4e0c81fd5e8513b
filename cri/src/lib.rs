//! r8s-cri: see the crate description; its issue builds this out.
