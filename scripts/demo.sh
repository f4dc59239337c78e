#!/usr/bin/env bash
# The whole product in one command, on a fresh machine: installs what the
# build needs (a C toolchain, pkg-config and OpenSSL headers on Debian or
# Ubuntu; Rust itself must be there, see scripts/setup.sh) and the local
# broker (noida-db, from PyPI), builds cxpulse, and runs `cxpulse demo`,
# which starts the broker on a free port, creates the topics, runs the event
# generator and every bundled job, serves /metrics and shows a live view.
# Ctrl-C (or q) stops everything it started, broker included.
# Arguments go to `cxpulse demo`, e.g. scripts/demo.sh --speed 6h --rate 500
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

need_build_tools
need_broker
# `cargo test --no-run` builds target/debug/cxpulse with the same feature set
# as the test suite, so after scripts/test.sh nothing is compiled again (a
# plain `cargo build` resolves dev-dependency features differently).
cargo test --locked --no-run --quiet
exec target/debug/cxpulse demo "$@"
