//! Joining a cluster like kubeadm/k3s: with `--server` and `--token`, the
//! agent discovers the cluster CA (`discovery`), obtains its client
//! certificate by a CSR (`csr`), writes `<root-dir>/kubelet.conf`, and keeps
//! the certificate fresh (`rotation`).

pub mod token;
