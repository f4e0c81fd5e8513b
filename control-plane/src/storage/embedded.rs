//! The embedded durable store (default backend), in the server's data dir.
//! Placeholder: the storage work replaces this with the real backend.
