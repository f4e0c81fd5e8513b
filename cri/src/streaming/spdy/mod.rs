//! SPDY/3.1, the framing kubectl and kubelet still use for port-forward (and
//! as the fallback of exec/attach): frames, compressed header blocks, and a
//! stream-multiplexing connection. No maintained Rust crate implements it.
pub mod conn;
pub mod frame;
pub mod header;

pub use conn::{Connection, IncomingStream, Role, SpdyError, StreamReader, StreamWriter};
pub use header::Headers;
