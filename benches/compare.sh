#!/usr/bin/env bash
# The standard comparison set (issue: zero-copy reads): 1 KiB records, 1 partition, 1 producer
# then 1 consumer, 2 GiB, acks=leader; the same with acks=durable; consumers over the data port
# and over gRPC; e2e latency at 10,000 records/s. Each run prints one JSON line with weir's
# figures, the baselines' (raw loopback TCP, NATS JetStream) and the ratios. Then replication,
# on a local cluster (a controller and 3 brokers, processes on loopback): produce with acks=all
# on a topic of replication factor 3 beside the same on replication factor 1 (same brokers, same
# run), and failover: the partition leader SIGKILLed 20 times under an acks=all producer, with a
# 2 s broker lease (the time to the next ack is dominated by it; it is printed beside).
#
#   bash benches/compare.sh            # 2 GiB per run
#   RECORDS=200000 KILLS=5 bash benches/compare.sh   # a quicker pass
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null; then
    echo "installing nats-server (Debian package) for the NATS JetStream baseline" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y nats-server >&2 || true
    else sudo apt-get install -y nats-server >&2 || true; fi
fi
cargo build --release -p weir-broker -p weir-bench >&2
bench=${CARGO_TARGET_DIR:-target}/release/weir-bench
records=${RECORDS:-2097152}   # 2 GiB of 1 KiB records

for acks in leader durable; do
    "$bench" produce --records "$records" --acks "$acks" --compare
done
"$bench" consume --records "$records" --transport data-port --compare
"$bench" consume --records "$records" --transport grpc --baselines raw-tcp
"$bench" e2e --rate 10000 --duration-secs 10
"$bench" produce --records "$records" --cluster 3 --replication-factor 3 --acks all
"$bench" failover --kills "${KILLS:-20}" --broker-lease-ms 2000
