#!/usr/bin/env bash
# The standard comparison set (issue: zero-copy reads): 1 KiB records, 1 partition, 1 producer
# then 1 consumer, 2 GiB, acks=leader; the same with acks=durable; consumers over the data port
# and over gRPC; e2e latency at 10,000 records/s. Each run prints one JSON line with weir's
# figures, the baselines' (raw loopback TCP, NATS JetStream) and the ratios.
#
#   bash benches/compare.sh            # 2 GiB per run
#   RECORDS=200000 bash benches/compare.sh   # a quicker pass
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null; then
    echo "installing nats-server (Debian package) for the NATS JetStream baseline" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y nats-server >&2 || true
    else sudo apt-get install -y nats-server >&2 || true; fi
fi
cargo build --release -p weir-broker -p weir-bench >&2
bench=target/release/weir-bench
records=${RECORDS:-2097152}   # 2 GiB of 1 KiB records

for acks in leader durable; do
    "$bench" produce --records "$records" --acks "$acks" --compare
done
"$bench" consume --records "$records" --transport data-port --compare
"$bench" consume --records "$records" --transport grpc --baselines raw-tcp
"$bench" e2e --rate 10000 --duration-secs 10
