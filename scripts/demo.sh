#!/usr/bin/env bash
# The demo: lbsync on the embedded file source, a real HAProxy on loopback, three backends.
#
# Usage: scripts/demo.sh            (runs until Ctrl-C)
#        LBSYNC_DEMO_SECONDS=30 scripts/demo.sh   (stops by itself)
#
# It installs what it needs (HAProxy, a virtualenv with lbsync), copies examples/demo into
# .demo/ (a fresh copy each run), starts backends blue-1, blue-2 and green-1 that answer with
# their own name, renders the first HAProxy configuration, starts HAProxy in master-worker
# mode and runs `lbsync run` in the foreground. Edit .demo/services.toml to shift traffic.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
DEMO="$REPO_ROOT/.demo"
PROXY_PORT=8080
API_PORT=9180
BACKENDS=("blue-1 9101" "blue-2 9102" "green-1 9103")

bash scripts/install-system.sh
VENV="$(bash scripts/venv.sh | tail -n1)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$PROXY_PORT" "$API_PORT" 9101 9102 9103; do
    if port_busy "$port"; then
        echo "demo: port $port on 127.0.0.1 is in use; stop what listens there first" >&2
        exit 1
    fi
done

rm -rf "$DEMO"
mkdir -p "$DEMO/run"
cp examples/demo/services.toml examples/demo/lbsync.toml "$DEMO/"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for backend in "${BACKENDS[@]}"; do
    # shellcheck disable=SC2086  # "name port" splits into two arguments on purpose
    "$VENV/bin/python" examples/demo/backend.py $backend &
    pids+=("$!")
done

LBSYNC=("$VENV/bin/lbsync" -c "$DEMO/lbsync.toml")

echo "==> lbsync check (configuration, template, and HAProxy's own validation)"
"${LBSYNC[@]}" check
echo "==> first configuration: lbsync render > $DEMO/run/haproxy.cfg"
"${LBSYNC[@]}" render >"$DEMO/run/haproxy.cfg"
haproxy -W -S "$DEMO/run/master.sock" -f "$DEMO/run/haproxy.cfg" >"$DEMO/run/haproxy.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do port_busy "$PROXY_PORT" && break; sleep 0.1; done
port_busy "$PROXY_PORT" || { cat "$DEMO/run/haproxy.log"; exit 1; }

measure() { "$VENV/bin/python" examples/demo/measure.py --port "$PROXY_PORT" -n 1000; }
echo "==> 1,000 requests through HAProxy (split blue 90 / green 10):"
measure

cat <<MSG

HAProxy listens on http://127.0.0.1:$PROXY_PORT (Host: shop.localhost); lbsync now watches
$DEMO/services.toml. Try, in another terminal:

  # shift traffic: edit the split, save, and lbsync reloads HAProxy without dropping a request
  sed -i 's/blue = 90, green = 10/blue = 50, green = 50/' $DEMO/services.toml

  # watch the split (1,000 requests, counted per backend)
  $VENV/bin/python $REPO_ROOT/examples/demo/measure.py -n 1000
  # or by hand
  while sleep 0.2; do curl -s -H 'Host: shop.localhost' http://127.0.0.1:$PROXY_PORT/; done

  # break it on purpose: lbsync refuses the entry, names it, and keeps the last good split
  sed -i 's/green = 50/green = 80/' $DEMO/services.toml

  # what lbsync believes and did: the live dashboard at http://127.0.0.1:$API_PORT/ in a
  # browser, the same as tables, and the metrics
  $VENV/bin/lbsync -c $DEMO/lbsync.toml status
  curl -s http://127.0.0.1:$API_PORT/metrics | grep '^lbsync_'

Ctrl-C stops lbsync, HAProxy and the backends.

MSG

if [[ -n "${LBSYNC_DEMO_SECONDS:-}" ]]; then
    "${LBSYNC[@]}" run &
    pids+=("$!")
    sleep "$LBSYNC_DEMO_SECONDS"
else
    "${LBSYNC[@]}" run
fi
