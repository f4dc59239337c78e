#!/usr/bin/env bash
# Local Kafka-compatible broker (noida-db) for development, tests and the demo.
#
#   scripts/broker.sh install          install noida-db 0.2.3 with pip if missing (in
#                                      .tools/venv where the system Python refuses pip)
#   scripts/broker.sh binary           print the broker's executable (for NOIDA_DB_BIN)
#   scripts/broker.sh start [DIR]      start on a free 127.0.0.1 port; state in DIR
#                                      (default .broker/); prints the bootstrap address
#   scripts/broker.sh stop [DIR]       stop the broker started with DIR
#   scripts/broker.sh status [DIR]     print the bootstrap address if running
#
# Example:  export KAFKA_BOOTSTRAP=$(scripts/broker.sh start)
set -euo pipefail

# shellcheck source=scripts/setup.sh
source "$(dirname "$0")/setup.sh"
cmd=${1:-}
dir=${2:-.broker}

install() {
  need_broker
}

binary() {
  need_broker
  echo "$NOIDA_DB_BIN"
}

free_port() {
  python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

running() {
  [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null
}

case "$cmd" in
  install)
    install
    ;;
  binary)
    binary
    ;;
  start)
    install
    if running; then
      cat "$dir/bootstrap"
      exit 0
    fi
    mkdir -p "$dir/data"
    port=$(free_port)
    # Start the binary itself (not the pip wrapper) so that the PID is the broker's.
    nohup "$(binary)" start --only kafka --host 127.0.0.1 --kafka-port "$port" \
      --data-dir "$dir/data" >"$dir/broker.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    for _ in $(seq 1 200); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port" | tee "$dir/bootstrap"
        exit 0
      fi
      sleep 0.05
    done
    echo "broker did not start; see $dir/broker.log" >&2
    exit 1
    ;;
  stop)
    if running; then
      pid=$(cat "$dir/pid")
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid" "$dir/bootstrap"
    ;;
  status)
    if running; then cat "$dir/bootstrap"; else echo "not running" >&2; exit 1; fi
    ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
