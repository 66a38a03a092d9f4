#!/usr/bin/env bash
# Installs what building and testing GoatKit needs on a fresh Debian machine. Idempotent: a
# machine that has everything already spends no time here.
#
# - rustfmt, clippy: the lint steps of .ci/run.
# - clang, lld: the C guest test of gk-wasm (clang --target=wasm32, wasm-ld).
# - aiosmtpd (PyPI): the SMTP server gk-core's email test talks to.
# - grpcio, grpcio-tools, grpcio-status (PyPI): the Python plugin example that gk-grpc's tests
#   run (grpcio-status decodes the host's google.rpc.Status errors).
# - chromium (Debian) and playwright-core (npm, pinned in crates/gk-server/tests/browser): the
#   admin page's browser test.
# - The Rust WASM toolchain for guests is installed by `cargo xtask build-plugins` itself
#   (a rustup wasm32 target when present, else Debian's rustc-web + rust-web-src).
set -euo pipefail

command -v cargo >/dev/null || { echo "install-deps: cargo is missing; install Rust first" >&2; exit 1; }

components=()
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || components+=(rustfmt)
rustup component list --installed 2>/dev/null | grep -q '^clippy' || components+=(clippy)
if [ ${#components[@]} -gt 0 ]; then
  echo "install-deps: adding rustup components: ${components[*]}"
  rustup component add "${components[@]}"
fi

packages=()
command -v clang >/dev/null || packages+=(clang)
command -v wasm-ld >/dev/null || packages+=(lld)
command -v chromium >/dev/null || packages+=(chromium)
command -v node >/dev/null || packages+=(nodejs npm)
if [ ${#packages[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "install-deps: installing aiosmtpd from PyPI (SMTP test server)"
  python3 -m pip install --quiet --root-user-action=ignore aiosmtpd
fi

if ! python3 -c 'import grpc, grpc_tools, grpc_status' 2>/dev/null; then
  echo "install-deps: installing grpcio, grpcio-tools and grpcio-status from PyPI (Python plugin example)"
  python3 -m pip install --quiet --root-user-action=ignore grpcio grpcio-tools grpcio-status
fi

browser_tests="$(dirname "$0")/../crates/gk-server/tests/browser"
if [ ! -d "$browser_tests/node_modules/playwright-core" ]; then
  echo "install-deps: installing playwright-core from npm (admin page browser test)"
  npm ci --prefix "$browser_tests" --no-audit --no-fund --silent
fi
