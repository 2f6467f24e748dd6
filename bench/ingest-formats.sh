#!/usr/bin/env bash
# Ingest speed and peak memory for the same tweets in three input formats: JSONL in the API's
# format, X API v2 pages, and an X account archive (one user's tweets, so one archive).
# Usage: bench/ingest-formats.sh [tweets, default 1000000] [work dir, default a temporary one]
set -euo pipefail
cd "$(dirname "$0")/.."
tweets=${1:-1000000}
cargo build --release --quiet -p xgate
xgate=$PWD/target/release/xgate
if [ -n "${2:-}" ]; then
    work=$2
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
cd "$work"
[ -e tweets.jsonl ] || "$xgate" gen --users 1 --per-user "$tweets" --out tweets.jsonl 2>/dev/null
[ -e pages.jsonl ] || "$xgate" gen --users 1 --per-user "$tweets" --format x-api-v2 --out pages.jsonl 2>/dev/null
[ -e archive ] || "$xgate" gen --users 1 --per-user "$tweets" --format x-archive --out archive 2>/dev/null

printf '| format | input | MiB | seconds | tweets/s | peak RSS MiB |\n|---|---|---|---|---|---|\n'
for case in "jsonl tweets.jsonl" "x-api-v2 pages.jsonl" "x-archive archive"; do
    set -- $case
    rm -f "$1".db*
    mib=$(du -sm "$2" | cut -f1)
    /usr/bin/time -f '%e %M' -o time.txt "$xgate" ingest --db "$1.db" "$2" >/dev/null 2>&1
    read -r seconds kib < time.txt
    awk -v f="$1" -v i="$2" -v m="$mib" -v s="$seconds" -v k="$kib" -v n="$tweets" \
        'BEGIN { printf "| %s | %s | %d | %.1f | %d | %d |\n", f, i, m, s, n / s, k / 1024 }'
    rm -f "$1".db*
done
