#!/usr/bin/env bash
# Throughput of POST /user/medias/continuation (limit 10) with billing on and off, side by side.
# The server is pinned to CPU 0 and wrk to CPU 1. Needs wrk (apt-get install wrk), curl, python3.
# Usage: bench/billed-vs-unbilled.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-3}
port=18181
cargo build --release --quiet
xgate=$PWD/target/release/xgate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$xgate" gen --users 20 --per-user 2000 --seed 5 --out tweets.jsonl 2>/dev/null
"$xgate" ingest --db bench.db tweets.jsonl >/dev/null
key=$("$xgate" keys create --db bench.db --account bench --credits 1000000000 | tail -n 1)

run() { # $1: extra serve flags; prints requests per second
    taskset -c 0 "$xgate" serve --db bench.db --bind 127.0.0.1:$port $1 >/dev/null 2>&1 &
    local pid=$!
    until curl -s -o /dev/null http://127.0.0.1:$port/healthz; do sleep 0.1; done
    local token
    token=$(curl -s -H "X-API-Key: $key" "http://127.0.0.1:$port/user/medias?user_id=100000&limit=10" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["continuation_token"])')
    cat > post.lua <<LUA
wrk.method = "POST"
wrk.body = '{"user_id": 100000, "continuation_token": "$token", "limit": 10}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$key"
LUA
    taskset -c 1 wrk -t1 -c32 -d"${seconds}s" -s post.lua http://127.0.0.1:$port/user/medias/continuation |
        awk '/Requests\/sec/ { print $2 }'
    kill -TERM "$pid"; wait "$pid" || true
}

printf '%-6s %12s %12s %7s\n' round billed unbilled ratio
for round in $(seq "$rounds"); do
    billed=$(run "")
    unbilled=$(run "--no-billing")
    printf '%-6s %12s %12s %7.2f\n' "$round" "$billed" "$unbilled" "$(echo "$billed / $unbilled" | bc -l)"
done
