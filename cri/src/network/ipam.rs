//! Host-local IPAM: a JSON file under `--root` mapping allocated addresses to sandbox
//! ids; allocation continues after the last address handed out, like CNI host-local.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, read_json, write_json};

/// Errors of address allocation.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    #[error("failed to persist allocations")]
    Store(#[source] StoreError),
    #[error("allocation table lock poisoned")]
    Poisoned,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Allocations {
    /// address -> sandbox id
    allocated: BTreeMap<Ipv4Addr, String>,
    last: Option<Ipv4Addr>,
}

/// The allocator of one pod CIDR.
pub struct Ipam {
    cidr: Ipv4Net,
    path: PathBuf,
    state: Mutex<Allocations>,
}

impl Ipam {
    /// Opens (or starts) the allocation file at `path`.
    pub fn open(cidr: Ipv4Net, path: PathBuf) -> Self {
        let state = read_json(&path).unwrap_or_default();
        Self {
            cidr,
            path,
            state: Mutex::new(state),
        }
    }

    /// Allocates an address for `owner`; an owner that already has one gets it again.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        let mut st = self.state.lock().map_err(|_| IpamError::Poisoned)?;
        if let Some((ip, _)) = st.allocated.iter().find(|(_, o)| *o == owner) {
            return Ok(*ip);
        }
        let first = u32::from(self.cidr.network()) + 2; // .1 is the gateway
        let last = u32::from(self.cidr.broadcast()).saturating_sub(1);
        if last < first {
            return Err(IpamError::Exhausted(self.cidr));
        }
        let span = last - first + 1;
        let start = st
            .last
            .map(u32::from)
            .filter(|l| (first..=last).contains(l))
            .map_or(first, |l| if l == last { first } else { l + 1 });
        for i in 0..span {
            let candidate = Ipv4Addr::from(first + (start - first + i) % span);
            if let std::collections::btree_map::Entry::Vacant(slot) = st.allocated.entry(candidate)
            {
                slot.insert(owner.to_string());
                st.last = Some(candidate);
                write_json(&self.path, &*st).map_err(IpamError::Store)?;
                return Ok(candidate);
            }
        }
        Err(IpamError::Exhausted(self.cidr))
    }

    /// Frees every address held by `owner`.
    pub fn release(&self, owner: &str) -> Result<(), IpamError> {
        let mut st = self.state.lock().map_err(|_| IpamError::Poisoned)?;
        let before = st.allocated.len();
        st.allocated.retain(|_, o| o != owner);
        if st.allocated.len() != before {
            write_json(&self.path, &*st).map_err(IpamError::Store)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let cidr: Ipv4Net = "10.244.7.0/29".parse().unwrap();
        let ipam = Ipam::open(cidr, path.clone());
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 7, 2));
        assert_ne!(a, b);
        assert_eq!(ipam.allocate("a").unwrap(), a);
        let reopened = Ipam::open(cidr, path);
        let c = reopened.allocate("c").unwrap();
        assert!(c != a && c != b);
    }

    #[test]
    fn freed_address_is_not_reused_immediately_and_pool_exhausts() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Net = "10.244.7.0/29".parse().unwrap(); // hosts .2 ..= .6
        let ipam = Ipam::open(cidr, dir.path().join("ipam.json"));
        let a = ipam.allocate("a").unwrap();
        ipam.release("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);
        for o in ["c", "d", "e", "f"] {
            ipam.allocate(o).unwrap();
        }
        assert!(matches!(ipam.allocate("g"), Err(IpamError::Exhausted(_))));
    }
}
