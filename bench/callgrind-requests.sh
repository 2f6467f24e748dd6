#!/usr/bin/env bash
# User-space instructions per request of `xgate serve`, counted by callgrind: repeatable where
# timings are not (a shared machine's speed drifts; instruction counts do not).
#
# Usage: bench/callgrind-requests.sh DB SCRIPT [serve options...]
#   DB      a store, e.g. the harness's (--dir DIR keeps DIR/bench.db)
#   SCRIPT  the harness's wrk script (DIR/continuation.lua): its request bodies and its key
# The server runs under valgrind; 1,000 requests warm it up uninstrumented, then 1,000 more are
# counted, one client, one at a time. Prints the instructions per request.
#
# CONNECTIONS=N counts under load instead: after the same warm-up, `wrk -t1 -cN -d20s` with
# SCRIPT, and the count is divided by the requests wrk completed. Charges then share commits as
# they do in the harness, so this is the way to count billing's cost per charge; the counts
# repeat to about 1% rather than 0.2%, since how many charges a commit takes varies a little.
# KEEP=FILE keeps callgrind's output there, for callgrind_annotate. XGATE=PATH counts that binary
# instead of building this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
db=$1
script=$2
shift 2
if [ -n "${XGATE:-}" ]; then
    xgate=$XGATE
else
    cargo build --release --quiet -p xgate
    xgate=$PWD/target/release/xgate
fi
out=$(mktemp)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$xgate" serve --db "$db" --bind "127.0.0.1:$port" "$@" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
requests() {
    python3 - "$port" "$1" "$script" <<'PY'
import http.client, re, sys
port, n, script = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read()
bodies = re.findall(r'\[==\[(\{.*?\})\]==\]', script)
key = re.search(r'xg_live_[A-Za-z0-9]+', script)
headers = {'Content-Type': 'application/json'}
if key:
    headers['X-API-Key'] = key.group(0)
conn = http.client.HTTPConnection('127.0.0.1', port)
for i in range(n):
    conn.request('POST', '/user/medias/continuation', body=bodies[i % len(bodies)], headers=headers)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f'request {i} answered {response.status}')
PY
}
for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
    sleep 0.2
done
requests 1000
callgrind_control -i on "$server" >/dev/null 2>&1
if [ -n "${CONNECTIONS:-}" ]; then
    report=$(wrk -t1 -c"$CONNECTIONS" -d20s -s "$script" "http://127.0.0.1:$port")
    count=$(awk '/requests in/ { print $1 }' <<<"$report")
    if grep -q 'Non-2xx' <<<"$report"; then
        echo "some requests failed under load:" >&2
        echo "$report" >&2
        exit 1
    fi
else
    requests 1000
    count=1000
fi
callgrind_control -i off "$server" >/dev/null 2>&1
kill -INT $server
wait $server || true
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "instructions per request: $((total / count)) ($count requests, user space)"
if [ -n "${KEEP:-}" ]; then
    cp "$out" "$KEEP"
fi
