#!/usr/bin/env bash
# Runs cxpulse locally on the bundled queries: starts a local broker (noida-db,
# installed if missing) on a free port, creates the topics, builds and runs
# the engine. Ctrl-C stops the engine and the broker.
# It uses the debug build, which `scripts/test.sh` has already built; for
# production use `cargo build --release` (a long first build on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

bootstrap=$(scripts/broker.sh start .broker)
trap 'scripts/broker.sh stop .broker' EXIT
export CXPULSE__KAFKA__BROKERS="$bootstrap"

# `cargo test --no-run` builds target/debug/cxpulse with the same feature set
# as the test suite, so after scripts/test.sh nothing is compiled again
# (a plain `cargo build` resolves dev-dependency features differently).
cargo test --locked --no-run --quiet
echo "broker:  $bootstrap   (export CXPULSE__KAFKA__BROKERS=$bootstrap in other terminals)" >&2
echo "metrics: http://127.0.0.1:9464/metrics" >&2
target/debug/cxpulse create-topics >/dev/null
target/debug/cxpulse run "$@"
