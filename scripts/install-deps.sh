#!/usr/bin/env bash
# Installs what building and testing GoatKit needs on a fresh Debian machine. Idempotent: a
# machine that has everything already spends no time here.
set -euo pipefail

missing=()
command -v cargo >/dev/null || { echo "install-deps: cargo is missing; install Rust first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || missing+=(rustfmt)
rustup component list --installed 2>/dev/null | grep -q '^clippy' || missing+=(clippy)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: adding rustup components: ${missing[*]}"
  rustup component add "${missing[@]}"
fi
