#!/usr/bin/env bash
# The README's first command, run exactly as the README spells it on this clean checkout: it
# must start a working broker. Waits for the ready line, creates a topic, produces and consumes
# a record with the CLI (built as the README's "Try it" says), sends SIGINT (what Ctrl-C sends)
# and expects exit 0 and the data dir the README promises.
set -euo pipefail
cd "$(dirname "$0")/.."

# The first `cargo run` line of the README's first sh block, comments cut: the command a new
# user types. If the README changes the command, this runs the new one.
start_cmd=$(awk '/^```sh/{in_block=1; next} /^```/{if (in_block) exit} in_block && /^cargo run/' README.md \
    | head -n1 | sed 's/[[:space:]]*#.*$//')
[ -n "$start_cmd" ] || { echo "no 'cargo run' line in the README's first sh block" >&2; exit 1; }
# The CLI as the README's "Try it" builds it.
cli_cmd=$(grep -m1 -E '^cargo build --release --bin weir( |$)' README.md | sed 's/[[:space:]]*&&.*$//')
[ -n "$cli_cmd" ] || { echo "no 'cargo build --release --bin weir' line in the README" >&2; exit 1; }

echo "README: $start_cmd"
echo "README: $cli_cmd"
$cli_cmd
export PATH="${CARGO_TARGET_DIR:-$PWD/target}/release:$PATH"

data_dir=weir-data
if [ -e "$data_dir" ]; then
    echo "./$data_dir exists already; this check needs a fresh one" >&2
    exit 1
fi
out=$(mktemp)
log=$(mktemp)
cleanup() {
    [ -n "${broker_pid:-}" ] && kill -9 "$broker_pid" 2>/dev/null || true
    rm -rf "$data_dir" "$out" "$log"
}
trap cleanup EXIT

# `cargo run` execs the broker, so this pid is the broker's once it is built.
$start_cmd >"$out" 2>"$log" &
broker_pid=$!
for _ in $(seq 1 1200); do
    grep -q '^weir-broker ready ' "$out" && break
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        echo "the README's command exited before it was ready:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    sleep 0.5
done
grep '^weir-broker ready ' "$out" || { echo "no ready line after 10 minutes" >&2; tail -n 30 "$log" >&2; exit 1; }

weir topic create readme-check --partitions 1
echo "hello from the README" | weir produce readme-check --acks durable
got=$(weir consume readme-check --count 1 --format '%v\n')
[ "$got" = "hello from the README" ] || { echo "consumed '$got'" >&2; exit 1; }
[ -d "$data_dir" ] || { echo "no ./$data_dir after a produce" >&2; exit 1; }

kill -INT "$broker_pid"
status=0
wait "$broker_pid" || status=$?
broker_pid=
[ "$status" -eq 0 ] || { echo "SIGINT: exit $status, expected 0" >&2; tail -n 30 "$log" >&2; exit 1; }
echo "README first command: started, served a topic, stopped cleanly on SIGINT"
