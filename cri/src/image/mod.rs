//! Images: pulled from OCI registries (`pull`), stored as blobs plus one unpacked
//! snapshot directory per layer (`unpack`), indexed by `store`.
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

pub use store::{ImageError, ImageRecord, ImageStore};
