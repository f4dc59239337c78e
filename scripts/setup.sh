# Shared by scripts/demo.sh and scripts/test.sh (sourced, not run): installs
# what building and running cxpulse needs on a fresh Debian or Ubuntu
# machine, as root or with sudo, and says what is missing elsewhere.
#
#   need_build_tools    a C toolchain, make, pkg-config and OpenSSL headers
#                       (librdkafka is built from source with TLS), and Rust
#                       at least the crate's rust-version
#   need_debian PKG...  Debian packages, installed if missing
#   need_pip PKG==V     a PyPI package: with pip, or in .tools/venv where the
#                       system Python refuses pip (PEP 668); .tools/venv/bin
#                       goes on PATH
#   need_broker         noida-db (PyPI); exports NOIDA_DB_BIN, which cxpulse
#                       and the tests use to find it

NOIDA_DB_VERSION=0.2.3
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUST_VERSION=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$REPO/Cargo.toml")
VENV="$REPO/.tools/venv"

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

need_debian() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]} (install them with your system's package manager)" >&2
    return 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

need_build_tools() {
  if command -v dpkg >/dev/null 2>&1; then
    need_debian build-essential pkg-config libssl-dev
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "Rust is missing: install it from https://rustup.rs (Rust $RUST_VERSION or newer), then run this again" >&2
    return 1
  fi
  local have
  have=$(rustc --version | sed 's/^rustc \([0-9]*\.[0-9]*\).*/\1/')
  if [ "$(printf '%s\n%s\n' "$RUST_VERSION" "$have" | sort -V | head -1)" != "$RUST_VERSION" ]; then
    echo "Rust $have is older than $RUST_VERSION, which cxpulse needs: run 'rustup update'" >&2
    return 1
  fi
}

# The Python that has (or gets) PyPI packages: the system's if its pip
# installs, else .tools/venv's.
python_for_pip() {
  if [ -x "$VENV/bin/python3" ]; then
    echo "$VENV/bin/python3"
  else
    echo python3
  fi
}

need_pip() {
  local spec=$1 python
  python=$(python_for_pip)
  if ! "$python" -m pip install --quiet --disable-pip-version-check "$spec" >&2 2>/dev/null; then
    if [ ! -x "$VENV/bin/python3" ]; then
      echo "the system Python refuses pip installs: using a virtual environment in .tools/venv" >&2
      python3 -m venv "$VENV" 2>/dev/null || {
        need_debian python3-venv
        python3 -m venv "$VENV"
      }
    fi
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "$spec" >&2
  fi
  if [ -d "$VENV/bin" ]; then export PATH="$VENV/bin:$PATH"; fi
}

# The noida-db executable inside the package installed for `python`.
noida_binary() {
  "$1" -c "import os, noida_db; print(os.path.join(os.path.dirname(noida_db.__file__), 'noida-db'))" 2>/dev/null
}

need_broker() {
  local python found version
  python=$(python_for_pip)
  found=$(noida_binary "$python" || true)
  version=$("$python" -c "import importlib.metadata as m; print(m.version('noida-db'))" 2>/dev/null || true)
  if [ -z "$found" ] || [ ! -x "$found" ] || [ "$version" != "$NOIDA_DB_VERSION" ]; then
    echo "installing noida-db==$NOIDA_DB_VERSION" >&2
    need_pip "noida-db==$NOIDA_DB_VERSION"
    python=$(python_for_pip)
    found=$(noida_binary "$python")
  fi
  export NOIDA_DB_BIN="$found"
}
