#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (the noida-db broker from PyPI, promtool from Debian's `prometheus`
# package), then `cargo test`. Integration tests start their own broker on a
# free 127.0.0.1 port, or use KAFKA_BOOTSTRAP when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/broker.sh install

if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)" >&2
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

cargo test --locked "$@"
