#!/usr/bin/env bash
# Installs a software Vulkan driver (Mesa lavapipe >= 25) that Dawn accepts, on
# Debian/Ubuntu machines that have no WebGPU adapter. Idempotent: it does nothing
# when an adapter is already reachable or lavapipe >= 25 is already installed.
#
#   bash scripts/setup-software-gpu.sh          # install if needed
#   bash scripts/setup-software-gpu.sh --check  # only report, exit 1 if missing
#
# Why backports: bookworm's own Mesa 22.3 lavapipe is rejected by Dawn
# ("shaderUniform*ArrayDynamicIndexing required"); bookworm-backports ships 25.x.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

mesa_version() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true
}

mesa_ok() {
  local v
  v="$(mesa_version)"
  [ -n "$v" ] || return 1
  local major="${v%%.*}"
  major="${major#*:}"
  [ "$major" -ge 25 ] 2>/dev/null
}

adapter_ok() {
  # Ask Dawn itself, when the project's node_modules are installed.
  [ -d "$root/node_modules/webgpu" ] || return 1
  (cd "$root" && timeout 60 node scripts/probe-adapter.mjs >/dev/null 2>&1)
}

if adapter_ok; then
  echo "setup-software-gpu: a WebGPU adapter is already available; nothing to do."
  exit 0
fi
if mesa_ok; then
  echo "setup-software-gpu: mesa-vulkan-drivers $(mesa_version) already installed; nothing to do."
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "setup-software-gpu: no adapter and no lavapipe >= 25" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-software-gpu: this script knows Debian/Ubuntu (apt-get) only." >&2
  echo "Install a Vulkan driver yourself: Mesa lavapipe >= 25 (package mesa-vulkan-drivers) or your GPU vendor's driver." >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

. /etc/os-release
codename="${VERSION_CODENAME:-}"
export DEBIAN_FRONTEND=noninteractive

if [ "${ID:-}" = "debian" ] && [ "$codename" = "bookworm" ]; then
  src=/etc/apt/sources.list.d/genalign-backports.sources
  if [ ! -f "$src" ]; then
    uris="http://deb.debian.org/debian"
    keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      # Reuse the machine's own mirror and keyring (first stanza = main archive).
      u="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
      k="$(awk '/^Signed-By:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
      [ -n "$u" ] && uris="$u"
      [ -n "$k" ] && keyring="$k"
    fi
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
      "$uris" "$keyring" | $SUDO tee "$src" >/dev/null
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
else
  # Newer Debian/Ubuntu releases ship Mesa >= 25 in their main suites.
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

if ! mesa_ok; then
  echo "setup-software-gpu: installed mesa-vulkan-drivers $(mesa_version), but Dawn needs >= 25." >&2
  exit 1
fi
echo "setup-software-gpu: installed mesa-vulkan-drivers $(mesa_version) (lavapipe)."
