//! r8s-server: a Kubernetes API server on an MVCC store, with the scheduler
//! and controllers running as its clients.

pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod resources;
pub mod selectors;
pub mod storage;
pub mod table;
pub mod watch_cache;
