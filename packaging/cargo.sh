#!/usr/bin/env bash
# Prints the cargo that builds client/rust: $TC_CARGO, else cargo on PATH,
# rustup's (~/.cargo/bin), Debian's. With no Rust toolchain at all it installs
# Debian's (cargo, rustfmt, rust-clippy: rustc 1.63, the crate's
# rust-version) rather than letting the Rust checks be skipped.
#
#   cargo=$(bash packaging/cargo.sh)
set -euo pipefail

for c in "${TC_CARGO:-}" "$(command -v cargo || true)" "$HOME/.cargo/bin/cargo" /usr/bin/cargo; do
  if [ -n "$c" ] && [ -x "$c" ]; then
    echo "$c"
    exit 0
  fi
done
packages=(cargo rustfmt rust-clippy)
if [ "$(id -u)" -ne 0 ]; then
  echo "cargo.sh: no Rust toolchain; run as root or: sudo apt-get install ${packages[*]}" >&2
  exit 1
fi
echo "cargo.sh: no Rust toolchain: installing Debian's (${packages[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
echo /usr/bin/cargo
