# Shared helpers for hack/ scripts. Source it; do not run it.
set -euo pipefail

R8S_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export R8S_ROOT

log() { printf '\033[1m[r8s]\033[0m %s\n' "$*" >&2; }

# Debian packages r8s needs to build and test. Installed once, idempotently.
R8S_PACKAGES=(
  build-essential pkg-config protobuf-compiler libclang-dev
  # protoc's well-known types (google/protobuf/*.proto), which etcd-client's
  # protos import: a Recommends of protobuf-compiler, not a dependency
  libprotobuf-dev
  libseccomp-dev libnftnl-dev libmnl-dev libnftables-dev
  nftables iproute2 util-linux procps psmisc
  busybox-static docker-registry skopeo umoci
  etcd-server etcd-client containerd runc crun containernetworking-plugins
  dnsutils jq curl openssl
  # the pure cgroup v2 VM node (hack/vm): qemu, a busybox initramfs
  qemu-system-x86 cpio kmod xz-utils zstd binutils
)

# Installs the missing packages from R8S_PACKAGES (root only, apt only).
ensure_packages() {
  local missing=()
  local p
  for p in "${R8S_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages: ${missing[*]} (run as root to install them)"
    return 1
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these services on install; r8s tests start their own copies.
  local svc
  for svc in docker-registry etcd containerd; do
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
  done
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      log "cargo not found: install a Rust toolchain (rustup) first"
      return 1
    fi
  fi
}

# The local image registry of a hack/up cluster: Debian's docker-registry on
# loopback (plain HTTP, which r8s-cri uses for loopback registries), holding
# the test images hack/images/build makes from Debian packages.
R8S_REGISTRY="${R8S_REGISTRY:-127.0.0.1:5000}"
REGISTRY_PIDFILE=/run/r8s/registry.pid

start_local_registry() {
  mkdir -p /run/r8s /var/lib/r8s/registry /etc/r8s
  if [ -f "$REGISTRY_PIDFILE" ] && kill -0 "$(cat "$REGISTRY_PIDFILE")" 2>/dev/null; then
    log "local registry already running on $R8S_REGISTRY"
  else
    cat >/etc/r8s/registry.yml <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/r8s/registry
http:
  addr: $R8S_REGISTRY
YAML
    nohup /usr/bin/docker-registry serve /etc/r8s/registry.yml >>/var/log/r8s-registry.log 2>&1 &
    echo $! >"$REGISTRY_PIDFILE"
    for _ in $(seq 100); do
      curl -fsS "http://$R8S_REGISTRY/v2/" >/dev/null 2>&1 && break
      sleep 0.1
    done
    log "local registry on $R8S_REGISTRY (log: /var/log/r8s-registry.log)"
  fi
  "$R8S_ROOT/hack/images/build" /var/cache/r8s/images "$R8S_REGISTRY"
}

stop_local_registry() {
  if [ -f "$REGISTRY_PIDFILE" ] && kill -0 "$(cat "$REGISTRY_PIDFILE")" 2>/dev/null; then
    kill "$(cat "$REGISTRY_PIDFILE")"
    log "local registry stopped"
  fi
  rm -f "$REGISTRY_PIDFILE"
}

# The nftables table of the cluster's service proxy (R8S_NFT_TABLE, default r8s).
R8S_NFT_TABLE="${R8S_NFT_TABLE:-r8s}"

# Deletes only r8s's own tables, never anything else of the ruleset: the
# proxy's (and its twin, "-b", which a full resync builds beside the live
# one), and the runtime's hostPort and the agent's masquerade table (named
# after the pod bridge).
delete_proxy_table() {
  local t
  for t in "$R8S_NFT_TABLE" "$R8S_NFT_TABLE-b" "${R8S_POD_BRIDGE:-r8s0}-hostport" "${R8S_POD_BRIDGE:-r8s0}-masq"; do
    case "$t" in
      r8s*) ;;
      *) log "not deleting nftables table $t: r8s owns only tables named r8s*"; continue ;;
    esac
    if command -v nft >/dev/null 2>&1 && nft list table ip "$t" >/dev/null 2>&1; then
      nft delete table ip "$t"
      log "deleted nftables table ip $t"
    fi
  done
}

# Pods keep running when r8s-server stops, as containers do when kubelet stops.
# remove_pods removes what the in-process runtime of hack/up recorded (k3s-killall's
# job), and nothing else: its containers' processes and cgroups, its mounts under
# /run/r8s/cri, its veths and bridge, and its records (so that the next start
# creates the pods afresh, as after a node reboot).
R8S_CRI_STATE="${R8S_CRI_STATE:-/var/lib/r8s/agent/cri}"
R8S_CRI_RUN="${R8S_CRI_RUN:-/run/r8s/cri}"
R8S_POD_BRIDGE="${R8S_POD_BRIDGE:-r8s0}"

# Every hierarchy's directory of cgroup $1 (v1 controllers and v2).
cgroup_dirs() {
  local h
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -d "$h${1#/}" ] && echo "$h${1#/}"
  done
}

# Removes cgroup $1 and its empty parents up to the `kubepods` directory.
remove_cgroup_up_to_kubepods() {
  local cg="$1" d
  while [ -n "$cg" ] && [ "$cg" != / ]; do
    for d in $(cgroup_dirs "$cg"); do rmdir "$d" 2>/dev/null || true; done
    [ "$(basename "$cg")" = kubepods ] && break
    cg="$(dirname "$cg")"
  done
}

remove_pods() {
  local f cg d veth n=0
  # The agent's pod network between nodes (--flannel-backend): the VXLAN device,
  # whose routes, neighbours and fdb entries go with it, and the host-gw routes,
  # which carry the agent's routing protocol number 82.
  if ip -d link show flannel.1 2>/dev/null | grep -q vxlan; then
    ip link del flannel.1 && log "deleted the VXLAN device flannel.1"
  fi
  ip route flush proto 82 2>/dev/null || true
  [ -d "$R8S_CRI_STATE/containers" ] || return 0
  for f in "$R8S_CRI_STATE"/containers/*.json; do
    [ -f "$f" ] || continue
    cg="$(jq -r '.cgroup_path // empty' "$f")"
    [ -n "$cg" ] || continue
    for d in $(cgroup_dirs "$cg"); do
      [ -f "$d/cgroup.procs" ] && { xargs -r kill -9 <"$d/cgroup.procs" 2>/dev/null || true; }
    done
    n=$((n + 1))
  done
  sleep 0.5
  grep -o " $R8S_CRI_RUN/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  for f in "$R8S_CRI_STATE"/sandboxes/*.json; do
    [ -f "$f" ] || continue
    veth="$(jq -r '.host_veth // empty' "$f")"
    [ -n "$veth" ] && { ip link del "$veth" 2>/dev/null || true; }
  done
  for f in "$R8S_CRI_STATE"/containers/*.json; do
    [ -f "$f" ] && remove_cgroup_up_to_kubepods "$(jq -r '.cgroup_path // empty' "$f")"
  done
  for f in "$R8S_CRI_STATE"/sandboxes/*.json; do
    [ -f "$f" ] && remove_cgroup_up_to_kubepods "$(jq -r '.cgroup_parent // empty' "$f")"
  done
  rm -rf "$R8S_CRI_STATE"/containers "$R8S_CRI_STATE"/sandboxes "$R8S_CRI_STATE"/ipam.json "$R8S_CRI_RUN"
  ip link del "$R8S_POD_BRIDGE" 2>/dev/null || true
  log "removed $n containers, their sandboxes and the $R8S_POD_BRIDGE bridge"
}

# The cgroup paths of process $1 (one per hierarchy, unique).
process_cgroups() {
  cut -d: -f3 "/proc/$1/cgroup" 2>/dev/null | sort -u
}

# Removes the empty cgroups of the agent's pod tree (`<cgroup>/kubepods`, under the
# server's own cgroup $1): only empty directories can be removed.
remove_kubepods_cgroups() {
  local d
  for d in $(cgroup_dirs "${1%/}/kubepods"); do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}
