#!/usr/bin/env bash
# Start time and idle resident memory of the release binary (BENCHMARKS.md,
# "Start and idle memory"): three starts on one fresh data directory (the
# first builds the index), then one later start that is asked a Chinese
# question through the console adapter.
#
#   cargo build --release && benches/memory.sh [path/to/opsclaw]
set -euo pipefail

bin=${1:-${CARGO_TARGET_DIR:-target}/release/opsclaw}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
pid=

printf 'data_dir = "%s/data"\n[http]\nlisten = "127.0.0.1:0"\n' "$dir" >"$dir/plain.toml"
# The console's chat must be allowed, or the question is refused before the knowledge base sees it.
printf 'data_dir = "%s/data"\n[http]\nlisten = "127.0.0.1:0"\n[console]\n[access]\nallowed_chats = ["console:*"]\n' \
    "$dir" >"$dir/console.toml"

rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }

# Polls /readyz every 5 ms once the log names the port; prints the time to ready.
ready() {
    local start=$1 log=$2 port=
    while :; do
        port=$(grep 'http listening' "$log" 2>/dev/null | grep -o '127\.0\.0\.1:[0-9]*' | head -1 | cut -d: -f2) || true
        if [[ -n $port ]] && [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz") == 200 ]]; then
            break
        fi
        sleep 0.005
    done
    echo "$(( ($(date +%s%N) - start) / 1000000 )) ms"
}

for run in 1 2 3; do
    start=$(date +%s%N)
    "$bin" run --config "$dir/plain.toml" >"$dir/log" 2>&1 &
    pid=$!
    took=$(ready "$start" "$dir/log")
    sleep 1
    echo "start $run: ready in $took, idle $(rss "$pid")"
    kill -TERM "$pid"
    wait "$pid" || true
done

# The question goes in on stdin, which stays open so the console adapter keeps running.
mkfifo "$dir/stdin"
start=$(date +%s%N)
"$bin" run --config "$dir/console.toml" <"$dir/stdin" >"$dir/log" 2>&1 &
pid=$!
exec 3>"$dir/stdin"
took=$(ready "$start" "$dir/log")
sleep 1
before=$(rss "$pid")
echo '/kb 磁盘满了怎么处理' >&3
sleep 3
echo "Chinese question: ready in $took, idle $before before, $(rss "$pid") 3 s after"
kill -TERM "$pid"
wait "$pid" || true
exec 3>&-
