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
