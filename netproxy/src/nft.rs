//! Applies ruleset transactions through [`r8s_nft::LibNftables`] (libnftables in-process,
//! in the chosen network namespace), or a fake in tests.
use std::sync::Arc;

use tracing::debug;

pub use r8s_nft::{LibNftables, NftError};

use crate::rules::Transaction;

/// Something that applies nftables transactions atomically (the real one, or a fake in tests).
pub trait Applier: Send + Sync {
    /// Applies one transaction; all or nothing.
    fn apply(&self, tx: &Transaction) -> Result<(), NftError>;
    /// Runs a command and returns its JSON output (e.g. `list table ip r8s`).
    fn run(&self, cmd: &str) -> Result<String, NftError>;
    /// Whether our table exists.
    fn table_exists(&self, table: &str) -> Result<bool, NftError>;
}

impl Applier for LibNftables {
    fn apply(&self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        debug!(
            commands = tx.commands().len(),
            elements = tx.elements().len(),
            "applying nftables transaction"
        );
        if !tx.commands().is_empty() {
            LibNftables::run(self, &tx.to_text())?;
        }
        if !tx.elements().is_empty() {
            self.add_elements(Arc::clone(tx.elements()))?;
        }
        Ok(())
    }

    fn run(&self, cmd: &str) -> Result<String, NftError> {
        LibNftables::run(self, cmd)
    }

    fn table_exists(&self, table: &str) -> Result<bool, NftError> {
        LibNftables::table_exists(self, table)
    }
}
