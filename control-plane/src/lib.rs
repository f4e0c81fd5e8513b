//! r8s-server: a Kubernetes API server on an MVCC store, with the scheduler
//! and controllers running as its clients.

pub mod admission;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod controllers;
pub mod embedded_agent;
pub mod managed_fields;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod registry;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod storage;
pub mod table;
pub mod tls;
pub mod token_command;
pub mod watch_cache;

pub use app::{RunError, run};
pub use config::{Config, ServerFlags};
