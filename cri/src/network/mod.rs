//! Pod networking: a node bridge with the pod CIDR's gateway address, one veth per
//! sandbox (peer created directly inside the pod netns), addresses from `ipam`, hostPorts
//! in nftables (`hostport`).
pub mod hostport;
pub mod ipam;
pub mod netlink;

pub use ipam::{Ipam, IpamError};
pub use netlink::{NetworkError, PodNetwork};
