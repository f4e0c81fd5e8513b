//! Applies ruleset transactions through [`r8s_nft::LibNftables`] (libnftables in-process,
//! in the chosen network namespace), or a fake in tests.
use tracing::debug;

pub use r8s_nft::{LibNftables, NftError};

use crate::rules::Transaction;

/// Something that applies nftables transactions atomically (the real one, or a fake in tests).
pub trait Applier: Send + Sync {
    /// Applies one transaction; all or nothing.
    fn apply(&self, tx: &Transaction) -> Result<(), NftError>;
    /// Runs a command and returns its JSON output (e.g. `list table ip r8s`).
    fn run(&self, cmd: &str) -> Result<String, NftError>;
}

impl Applier for LibNftables {
    fn apply(&self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        debug!(
            commands = tx.commands().len(),
            "applying nftables transaction"
        );
        LibNftables::run(self, &tx.to_text()).map(|_| ())
    }

    fn run(&self, cmd: &str) -> Result<String, NftError> {
        LibNftables::run(self, cmd)
    }
}
