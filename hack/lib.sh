# Shared helpers for hack/ scripts. Source it; do not run it.
set -euo pipefail

R8S_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export R8S_ROOT

log() { printf '\033[1m[r8s]\033[0m %s\n' "$*" >&2; }

# Debian packages r8s needs to build and test. Installed once, idempotently.
R8S_PACKAGES=(
  build-essential pkg-config protobuf-compiler libclang-dev
  libseccomp-dev libnftnl-dev libmnl-dev libnftables-dev
  nftables iproute2 util-linux procps psmisc
  busybox-static docker-registry skopeo umoci
  etcd-server etcd-client containerd runc dnsutils jq curl
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

# Deletes only the proxy's own table, never anything else of the ruleset.
delete_proxy_table() {
  case "$R8S_NFT_TABLE" in
    r8s*) ;;
    *) log "not deleting nftables table $R8S_NFT_TABLE: r8s owns only tables named r8s*"; return 0 ;;
  esac
  if command -v nft >/dev/null 2>&1 && nft list table ip "$R8S_NFT_TABLE" >/dev/null 2>&1; then
    nft delete table ip "$R8S_NFT_TABLE"
    log "deleted nftables table ip $R8S_NFT_TABLE"
  fi
}
