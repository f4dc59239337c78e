#!/usr/bin/env bash
# Runs cxpulse locally on the bundled queries: starts a local broker (noida-db,
# installed if missing) on a free port, creates the topics, builds and runs
# the engine. Ctrl-C stops the engine and the broker.
set -euo pipefail
cd "$(dirname "$0")/.."

bootstrap=$(scripts/broker.sh start .broker)
trap 'scripts/broker.sh stop .broker' EXIT
export CXPULSE__KAFKA__BROKERS="$bootstrap"

cargo build --release --locked --quiet
echo "broker:  $bootstrap   (export CXPULSE__KAFKA__BROKERS=$bootstrap in other terminals)" >&2
echo "metrics: http://127.0.0.1:9464/metrics" >&2
target/release/cxpulse create-topics >/dev/null
target/release/cxpulse run "$@"
