#!/usr/bin/env bash
# Throughput of POST /user/medias/continuation (limit 10, charged) on the embedded store and on
# PostgreSQL, side by side, with the same data. The server is pinned to CPU 0 and wrk to CPU 1;
# PostgreSQL runs where the machine runs it (here: the same two cores).
# Needs wrk, curl, python3 and a PostgreSQL (default postgres://postgres@127.0.0.1:5432/test; a
# schema of its own is made and dropped).
# Usage: bench/postgres-vs-sqlite.sh [seconds per run, default 10] [rounds, default 3] [URL]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-3}
base=${3:-postgres://postgres@127.0.0.1:5432/test}
port=18182
cargo build --release --quiet -p xgate
xgate=$PWD/target/release/xgate
work=$(mktemp -d)
schema=xgate_bench_$$
psql "$base" -qc "CREATE SCHEMA $schema"
trap 'cd /; rm -rf "$work"; psql "$base" -qc "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE"' EXIT
pg="$base?options=-c%20search_path%3D$schema"
cd "$work"
"$xgate" gen --users 200 --per-user 500 --seed 5 --out tweets.jsonl 2>/dev/null
for db in bench.db "$pg"; do
    "$xgate" ingest --db "$db" tweets.jsonl >/dev/null
    "$xgate" keys create --db "$db" --account bench --credits 1000000000 | tail -n 1 > "key-$(echo "$db" | md5sum | cut -c1-8)"
done

run() { # $1: the store; prints requests per second
    local key token
    key=$(cat "key-$(echo "$1" | md5sum | cut -c1-8)")
    taskset -c 0 "$xgate" serve --db "$1" --bind 127.0.0.1:$port >/dev/null 2>&1 &
    local pid=$!
    until curl -s -o /dev/null http://127.0.0.1:$port/healthz; do sleep 0.1; done
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

printf '%-6s %12s %12s %7s\n' round sqlite postgres ratio
for round in $(seq "$rounds"); do
    sqlite=$(run bench.db)
    postgres=$(run "$pg")
    printf '%-6s %12s %12s %7.2f\n' "$round" "$sqlite" "$postgres" "$(echo "$postgres / $sqlite" | bc -l)"
done
