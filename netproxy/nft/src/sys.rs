//! FFI to Debian's libnftables: the only place with `unsafe`; [`crate::LibNftables`] wraps it.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::ptr::NonNull;

#[repr(C)]
struct NftCtxRaw {
    _private: [u8; 0],
}

const NFT_CTX_DEFAULT: u32 = 0;
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

#[link(name = "nftables")]
unsafe extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut NftCtxRaw;
    fn nft_ctx_free(ctx: *mut NftCtxRaw);
    fn nft_ctx_output_set_flags(ctx: *mut NftCtxRaw, flags: c_uint);
    fn nft_ctx_buffer_output(ctx: *mut NftCtxRaw) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut NftCtxRaw) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut NftCtxRaw) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut NftCtxRaw) -> *const c_char;
    fn nft_run_cmd_from_buffer(ctx: *mut NftCtxRaw, buf: *const c_char) -> c_int;
}

/// Errors of the libnftables context.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// `nft_ctx_new` returned NULL.
    #[error("nft_ctx_new failed")]
    CtxNew,
    /// The command text contained a NUL byte.
    #[error("command contains a NUL byte")]
    Nul(#[from] std::ffi::NulError),
    /// libnftables rejected the commands.
    #[error("libnftables: {0}")]
    Run(String),
}

/// An owned `struct nft_ctx` that reads nft syntax (or JSON), writes JSON, and buffers output
/// and errors.
///
/// The netlink socket is opened per command in the calling thread's network namespace.
pub struct NftCtx {
    ptr: NonNull<NftCtxRaw>,
}

// SAFETY: an nft_ctx has no thread affinity; `&mut self` on `run` keeps use exclusive.
unsafe impl Send for NftCtx {}

impl NftCtx {
    /// Creates a context that writes JSON (`list` output); input may be nft syntax or JSON.
    pub fn new() -> Result<Self, SysError> {
        // SAFETY: plain constructor; NULL is handled below.
        let raw = unsafe { nft_ctx_new(NFT_CTX_DEFAULT) };
        let ptr = NonNull::new(raw).ok_or(SysError::CtxNew)?;
        // SAFETY: ptr is a live context we own; these only set flags and allocate buffers.
        unsafe {
            nft_ctx_output_set_flags(ptr.as_ptr(), NFT_CTX_OUTPUT_JSON);
            nft_ctx_buffer_output(ptr.as_ptr());
            nft_ctx_buffer_error(ptr.as_ptr());
        }
        Ok(Self { ptr })
    }

    /// Runs `cmd` (JSON or nft syntax) as one transaction; returns the output buffer.
    pub fn run(&mut self, cmd: &str) -> Result<String, SysError> {
        let c = CString::new(cmd)?;
        // SAFETY: ptr is live and exclusively borrowed; c outlives the call.
        let rc = unsafe { nft_run_cmd_from_buffer(self.ptr.as_ptr(), c.as_ptr()) };
        // SAFETY: the buffers were enabled in `new`; the returned strings are owned by the
        // context and valid until the next command, so they are copied out at once.
        let (out, err) = unsafe {
            (
                buf_to_string(nft_ctx_get_output_buffer(self.ptr.as_ptr())),
                buf_to_string(nft_ctx_get_error_buffer(self.ptr.as_ptr())),
            )
        };
        if rc != 0 {
            return Err(SysError::Run(err.trim().to_string()));
        }
        Ok(out)
    }
}

/// # Safety
/// `p` must be NULL or a NUL-terminated string valid for the duration of the call.
unsafe fn buf_to_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Drop for NftCtx {
    fn drop(&mut self) {
        // SAFETY: we own the context and free it exactly once.
        unsafe { nft_ctx_free(self.ptr.as_ptr()) }
    }
}
