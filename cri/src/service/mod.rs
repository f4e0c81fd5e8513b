//! gRPC handlers: `runtime` (RuntimeService) and `image` (ImageService) turn
//! requests into `Runtime` calls; errors map to gRPC codes in one place.
mod image;
mod runtime;

pub use image::ImageHandler;
pub use runtime::RuntimeHandler;

use crate::image::ImageError;
use crate::runtime::RuntimeError;

/// Full error chain, one line: what kubelet shows as the failure message.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> Self {
        let msg = chain(&e);
        match e {
            RuntimeError::NotFound { .. } => tonic::Status::not_found(msg),
            RuntimeError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            RuntimeError::Invalid(_) => tonic::Status::invalid_argument(msg),
            RuntimeError::Precondition(_) => tonic::Status::failed_precondition(msg),
            RuntimeError::Failed { step, .. } if step.contains("timeout") => {
                tonic::Status::deadline_exceeded(msg)
            }
            RuntimeError::Failed { .. } => tonic::Status::internal(msg),
        }
    }
}

impl From<ImageError> for tonic::Status {
    fn from(e: ImageError) -> Self {
        let msg = chain(&e);
        match e {
            ImageError::InvalidReference(_) => tonic::Status::invalid_argument(msg),
            ImageError::NotFound(_) => tonic::Status::not_found(msg),
            _ => tonic::Status::unknown(msg),
        }
    }
}

pub(crate) type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
