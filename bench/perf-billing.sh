#!/usr/bin/env bash
# Where billing's time goes, by the kernel's clock: what callgrind cannot count (system calls,
# context switches, the disk's syncs). Profiles `xgate serve` under wrk twice, charged and with
# --no-billing, with `perf record -e cpu-clock` (a software clock: works where the VM hides the
# hardware counters), and prints the core's microseconds a request in the kernel and in user
# space for each, then the symbols that billing adds the most to.
#
# Usage: bench/perf-billing.sh DB SCRIPT
#   DB      a store, e.g. the harness's (--dir DIR keeps DIR/bench.db)
#   SCRIPT  the harness's wrk script (DIR/continuation.lua): its request bodies and its key
# XGATE=PATH profiles that binary instead of building this checkout's; CONNECTIONS=N (default
# 128) sets wrk's connections. Needs perf (Debian's linux-perf) and wrk. The server runs on CPU 0
# and wrk on CPU 1, as in the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
db=$1
script=$2
if [ -n "${XGATE:-}" ]; then
    xgate=$XGATE
else
    cargo build --release --quiet -p xgate
    xgate=$PWD/target/release/xgate
fi
connections=${CONNECTIONS:-128}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

profile() { # $1: name; the rest: serve options. Writes $work/$1.syms and $work/$1.requests.
    local name=$1
    shift
    taskset -c 0 "$xgate" serve --db "$db" --bind "127.0.0.1:$port" "$@" >/dev/null 2>&1 &
    local server=$!
    for _ in $(seq 300); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
        sleep 0.2
    done
    taskset -c 1 wrk -t1 -c"$connections" -d3s -s "$script" "http://127.0.0.1:$port" >/dev/null
    # perf samples 8 s in the middle of a 10 s load; the requests of those 8 s are counted from
    # the server's own page cache counters, before and after.
    taskset -c 1 wrk -t1 -c"$connections" -d10s -s "$script" "http://127.0.0.1:$port" \
        >"$work/$name.wrk" &
    local load=$!
    sleep 1
    local before after
    before=$(served)
    perf record -q -e cpu-clock -F 4000 -p "$server" -o "$work/$name.data" -- sleep 8 \
        >/dev/null 2>&1
    after=$(served)
    wait $load
    kill -INT $server
    wait $server || true
    if grep -q 'Non-2xx' "$work/$name.wrk"; then
        echo "$name: some requests failed under load" >&2
        cat "$work/$name.wrk" >&2
        exit 1
    fi
    echo $((after - before)) >"$work/$name.requests"
    perf report -i "$work/$name.data" --no-children --sort sym -n -q -g none 2>/dev/null \
        >"$work/$name.syms"
}

served() { # pages the server has looked up (each request of SCRIPT looks up one), from /metrics
    curl -sf "http://127.0.0.1:$port/metrics" |
        awk '/^xgate_page_cache_requests_total/ { n += $NF } END { printf "%d\n", n }'
}

profile charged
profile unbilled --no-billing
python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
HZ = 4000

def load(name):
    requests = int(open(f"{work}/{name}.requests").read())
    per = {}
    for line in open(f"{work}/{name}.syms"):
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\[[k.]\])\s+(.*)", line)
        if m:
            key = (m.group(2), re.sub(r"\s+", " ", m.group(3))[:100])
            per[key] = per.get(key, 0) + int(m.group(1)) / HZ / requests * 1e6
    return requests, per

(cr, charged), (ur, unbilled) = load("charged"), load("unbilled")
def part(per, kind):
    return sum(v for (k, _), v in per.items() if kind is None or k == kind)
print(f"requests profiled: charged {cr}, billing off {ur}")
print("core µs a request   charged  billing off  billing's share")
for label, kind in (("all", None), ("kernel", "[k]"), ("user space", "[.]")):
    c, u = part(charged, kind), part(unbilled, kind)
    print(f"{label:<18} {c:8.2f} {u:12.2f} {c - u:16.2f}")
print("\nwhat billing adds most to (µs a request: share, charged, billing off):")
keys = set(charged) | set(unbilled)
for key in sorted(keys, key=lambda k: unbilled.get(k, 0) - charged.get(k, 0))[:25]:
    c, u = charged.get(key, 0), unbilled.get(key, 0)
    print(f"{c - u:7.3f} {c:7.3f} {u:7.3f}  {key[0]} {key[1]}")
PY
