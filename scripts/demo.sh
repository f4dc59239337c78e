#!/usr/bin/env bash
# The whole product in one command: installs the local broker (noida-db, from
# PyPI) if it is missing, builds cxpulse, and runs `cxpulse demo`, which
# starts the broker on a free port, creates the topics, runs the event
# generator and every bundled job, serves /metrics and shows a live view.
# Ctrl-C (or q) stops everything it started, broker included.
# Arguments go to `cxpulse demo`, e.g. scripts/demo.sh --speed 6h --rate 500
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/broker.sh install
# `cargo test --no-run` builds target/debug/cxpulse with the same feature set
# as the test suite, so after scripts/test.sh nothing is compiled again (a
# plain `cargo build` resolves dev-dependency features differently).
cargo test --locked --no-run --quiet
exec target/debug/cxpulse demo "$@"
