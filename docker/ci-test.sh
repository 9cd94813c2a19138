#!/usr/bin/env bash
# The docker stage of CI: the compose cluster (a controller and three brokers) end to end.
#
#   bash docker/ci-test.sh
#
# Skips (exit 0, with a message) where no Docker engine answers or no compose tool exists.
# Otherwise: builds the images (docker/build-images.sh), `compose up -d`, waits for health, and
# from the host (external listeners) and inside the network (internal addresses):
#   - a 6-partition topic (replication factor 3, min in-sync 2: the cluster's defaults), 50,000
#     keyed records produced and consumed back, per-key order checked;
#   - every node's metrics listener through its published port: /readyz ready (the CLI's
#     `weir health`, what the health checks run), and the brokers' /metrics counting the 50,000
#     records produced, the controller's counting three brokers alive;
#   - a partition's leader killed while a producer (acks=all, numbered records) and a following
#     consumer run from the host: a new leader with a bumped epoch takes over from the ISR, the
#     dead broker leaves the ISR, both clients go on, and every number acknowledged is consumed
#     exactly once, in order per partition; started again, the broker rejoins every ISR;
#   - a consumer group's commits and the topic survive a controller restart; the group goes on
#     after its commit without repeating a record.
# `compose down -v` always runs at exit (logs dumped first on failure), so a rerun starts clean.
#
# Environment: WEIR_CI_PROJECT (compose project, default weir-ci), WEIR_IMAGE (default
# weir:local), WEIR_PROFILE (release or debug: which build goes into the image and runs the CLI;
# default release), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
START=$SECONDS

say() { printf '[docker-ci %4ds] %s\n' "$((SECONDS - START))" "$*"; }
skip() {
    say "skipping the docker stage: $*"
    exit 0
}
fail() {
    say "FAILED: $*" >&2
    exit 1
}

# --- can this machine run the stage? -------------------------------------------------------
command -v docker >/dev/null 2>&1 || skip "no docker command on PATH"
docker info >/dev/null 2>&1 || skip "no Docker engine answers (docker info failed)"
case ${DOCKER_HOST:-unix://} in
unix://*) ;;
*) skip "DOCKER_HOST=$DOCKER_HOST is not a local engine: the published ports would not be on localhost" ;;
esac
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    skip "no compose tool (neither 'docker compose' nor docker-compose)"
fi

PROJECT=${WEIR_CI_PROJECT:-weir-ci}
WEIR_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/${WEIR_PROFILE:-release}/weir
EXT=localhost:19092 # broker1's external listener, published on the host
TOPIC=orders
KEYS=500
PER_KEY=100
TOTAL=$((KEYS * PER_KEY))
HEALTH_TIMEOUT=${WEIR_CI_HEALTH_TIMEOUT:-120}

compose() { "${COMPOSE[@]}" --project-name "$PROJECT" --file "$ROOT/docker-compose.yml" "$@"; }
# The host's CLI against the cluster's external listener; no call may hang the stage.
weir() { timeout 120 "$WEIR_BIN" --broker "$EXT" "$@"; }
# The CLI inside a broker container: internal addresses, on the compose network.
weir_in() {
    local svc=$1
    shift
    timeout 120 "${COMPOSE[@]}" --project-name "$PROJECT" --file "$ROOT/docker-compose.yml" \
        exec -T "$svc" /usr/local/bin/weir --broker controller:9092 "$@"
}

WORK=$(mktemp -d)
on_exit() {
    local rc=$?
    set +e
    # The failover's producer and consumer, if the stage failed while they ran.
    [[ -n ${PRODUCER:-} ]] && kill "$PRODUCER" 2>/dev/null
    [[ -n ${CONSUMER:-} ]] && kill "$CONSUMER" 2>/dev/null
    if [[ $rc -ne 0 ]]; then
        local f
        for f in producer.err consumer.err; do
            [[ -s $WORK/$f ]] && say "the failover's $f:" && tail -20 "$WORK/$f"
        done
        say "the stage failed (exit $rc); containers and their last logs:"
        compose ps
        compose logs --no-color --tail=100
    fi
    say "compose down -v"
    compose down -v --remove-orphans >/dev/null 2>&1 || say "compose down -v failed"
    rm -rf "$WORK"
    if [[ $rc -eq 0 ]]; then
        say "docker stage passed in $((SECONDS - START)) s"
    else
        say "docker stage FAILED after $((SECONDS - START)) s"
    fi
    exit "$rc"
}
trap on_exit EXIT
say "using ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')), project $PROJECT"

# Waits until every named service's container reports healthy.
wait_healthy() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT)) svc cid state health
    for svc in "$@"; do
        while :; do
            cid=$(compose ps -a -q "$svc")
            [[ -n $cid ]] || fail "service $svc has no container"
            state=$(docker inspect --format '{{.State.Status}}' "$cid")
            health=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$cid")
            [[ $health == healthy ]] && break
            [[ $health == none ]] && fail "service $svc has no health check"
            [[ $state == exited || $state == dead ]] &&
                fail "service $svc is $state (exit code $(docker inspect --format '{{.State.ExitCode}}' "$cid"))"
            ((SECONDS < deadline)) ||
                fail "service $svc not healthy after ${HEALTH_TIMEOUT}s (state $state, health $health)"
            sleep 1
        done
    done
    say "healthy: $*"
}

# `topic describe TOPIC` as "PARTITION LEADER-ID ADDRESS STATE EPOCH REPLICAS ISR" lines (STATE:
# up or DOWN; REPLICAS and ISR as the CLI prints them, comma-separated ids). The header must be
# the one this parses: the leader column, then EPOCH, REPLICAS and ISR last.
partitions() {
    weir topic describe "$1" | awk '
        /^PARTITION/ {
            if ($(NF - 2) != "EPOCH" || $(NF - 1) != "REPLICAS" || $NF != "ISR") {
                print "unexpected topic describe header: " $0 > "/dev/stderr"; exit 2
            }
            t = 1; next
        }
        t && NF && match($0, /[0-9]+ \([^)]*\)/) {
            l = substr($0, RSTART, RLENGTH); split(l, f, " ")
            gsub(/[()]/, "", f[2])
            print $1, f[1], f[2], (index($0, "DOWN") ? "DOWN" : "up"), $(NF - 2), $(NF - 1), $NF
        }'
}
leaders() { partitions "$TOPIC"; }

# Polls COMMAND... every half second until it succeeds; fails with WHAT after LIMIT seconds.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        ((SECONDS < deadline)) || fail "$what: not so after $limit s"
        sleep 0.5
    done
}

# GET http://127.0.0.1:PORT/PATH from the host with bash's /dev/tcp (no curl needed); prints
# the body, fails unless the answer is 200.
http_get() (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&3
    response=$(timeout 10 cat <&3) || exit 1
    [[ ${response%%$'\r'*} == HTTP/1.?" 200"* ]] || exit 1
    printf '%s\n' "${response#*$'\r\n\r\n'}"
)
# A metric's value in a node's /metrics (the sample line named exactly SERIES), published on PORT.
metric() { http_get "$1" /metrics | awk -v s="$2" '$1 == s { print $2 }'; }

# Whether no partition of the topics is DOWN.
none_down() {
    local t
    for t in "$@"; do
        ! partitions "$t" | grep -q DOWN || return 1
    done
}
wait_all_up() { wait_until 30 "every partition of $* led by a live broker" none_down "$@"; }

# Whether every partition of the topics has its full replica set in sync.
isr_full() {
    local t
    for t in "$@"; do
        partitions "$t" | awk '{
            n = split($6, r, ","); m = split($7, i, ",")
            if ($4 != "up" || n != 3 || m != n) exit 1
        }' || return 1
    done
}

# Checks "KEY VALUE" lines where VALUE is KEY-n: every key's n runs 1, 2, 3... in order, with
# no gap or repeat. Prints "<records> <keys>".
check_keyed() {
    awk '{
        n = substr($2, length($1) + 2) + 0
        if ($2 != $1 "-" n) { printf "bad record: %s\n", $0 > "/dev/stderr"; bad = 1 }
        if (n != last[$1] + 1) { printf "key %s: %d after %d\n", $1, n, last[$1] > "/dev/stderr"; bad = 1 }
        last[$1] = n
    } END { k = 0; for (x in last) k++; print NR, k; exit bad }' "$@"
}

# --- build and start -----------------------------------------------------------------------
say "building the images (docker/build-images.sh)"
bash "$ROOT/docker/build-images.sh"
[[ -x $WEIR_BIN ]] || fail "$WEIR_BIN missing after the build"

say "removing what an aborted run may have left (compose down -v)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
for port in 19090 19092 19093 29092 29093 39092 39093 19644 19645 19646 19647; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "host port $port is already in use (another weir cluster? docker compose ls / docker ps)"
    fi
done

say "compose up -d"
compose up -d
wait_healthy controller broker1 broker2 broker3

# --- 50,000 keyed records from the host ----------------------------------------------------
say "topic $TOPIC: 6 partitions over the three brokers (placement round-robin, replication by default)"
weir topic create "$TOPIC" --partitions 6 --placement round-robin
weir topic describe "$TOPIC" >"$WORK/describe"
cat "$WORK/describe"
grep -Eq '^replication +3$' "$WORK/describe" || fail "topic $TOPIC is not replicated 3 ways by default"
grep -Eq '^min in-sync +2$' "$WORK/describe" || fail "topic $TOPIC's min in-sync replicas is not 2 by default"
leaders >"$WORK/leaders"
[[ $(wc -l <"$WORK/leaders") -eq 6 ]] || fail "describe shows $(wc -l <"$WORK/leaders") partitions, not 6"
for b in 1 2 3; do
    grep -q "^[0-9]* $b localhost:${b}9092 up " "$WORK/leaders" ||
        fail "broker $b leads no partition, or not at its external address localhost:${b}9092"
done
isr_full "$TOPIC" || fail "not every partition of $TOPIC has 3 replicas, all in sync"

say "producing $TOTAL keyed records ($KEYS keys x $PER_KEY) from the host, acks=all"
# Record i: key k(i mod KEYS), value <key>-<n> with n counting that key's records from 1.
# acks=all: a record is acknowledged once every in-sync replica has it, so it is below the high
# watermark, and the consume that follows (which stops at the high watermark) sees it.
awk -v keys=$KEYS -v total=$TOTAL 'BEGIN {
    for (i = 0; i < total; i++) { k = "k" (i % keys); printf "%s:%s-%d\n", k, k, int(i / keys) + 1 }
}' | weir produce "$TOPIC" --key-separator : --acks all

say "consuming them back from the host"
weir consume "$TOPIC" --format '%k %v\n' >"$WORK/all.txt"
res=$(check_keyed "$WORK/all.txt") || fail "records out of order or damaged (above)"
read -r n k <<<"$res"
[[ $n -eq $TOTAL && $k -eq $KEYS ]] || fail "consumed $n records of $k keys, expected $TOTAL of $KEYS"
say "consumed $n records, $k keys, every key in order"

say "metrics from the host: each node's /readyz and /metrics on its published port"
for port in 19644 19645 19646 19647; do
    weir health --metrics "localhost:$port" >/dev/null || fail "the node on metrics port $port is not ready"
done
in=0
for port in 19645 19646 19647; do
    n=$(metric "$port" "weir_topic_records_in_total{topic=\"$TOPIC\"}") || fail "no /metrics on port $port"
    in=$((in + ${n:-0}))
done
[[ $in -eq $TOTAL ]] || fail "the brokers' weir_topic_records_in_total for $TOPIC sums to $in, not $TOTAL"
alive=$(metric 19644 weir_cluster_brokers_alive) || fail "no /metrics from the controller"
[[ $alive == 3 ]] || fail "the controller's weir_cluster_brokers_alive is '$alive', not 3"
say "every node ready; the brokers counted $in records in; the controller sees $alive brokers alive"

say "inside the network: the CLI in broker3's container against controller:9092"
weir_in broker3 topic describe "$TOPIC" >"$WORK/describe-internal"
cat "$WORK/describe-internal"
for b in 1 2 3; do
    grep -q "broker$b:9092" "$WORK/describe-internal" || fail "internal describe does not name broker$b:9092"
done
! grep -q localhost "$WORK/describe-internal" || fail "internal describe hands out external (localhost) addresses"
n=$(weir_in broker3 consume "$TOPIC" --format '%k\n' | wc -l)
[[ $n -eq $TOTAL ]] || fail "consumed $n records inside the network, expected $TOTAL"
say "consumed $n records inside the network (internal gRPC and data-port addresses)"

# --- a partition's leader killed under a producer and a consumer ---------------------------
# A second topic, 3 partitions led one per broker, takes numbered records 1, 2, 3... (keyed, so
# the hash partitioner spreads them) from a paced producer with acks=all while a following
# consumer reads them, both from the host. The leader of partition 1 is killed mid-stream (not
# broker 1: the host's CLI calls below bootstrap through broker 1's listener). The producer runs
# until the broker is back in every ISR (however slowly compose v1 kills and starts it here),
# then its input ends: N, the last number, is what the consumer must have printed, once each.
LEDGER=ledger
PACE=200 # records per 0.1 s: about 2000 a second
say "topic $LEDGER: 3 partitions, replication by default"
weir topic create "$LEDGER" --partitions 3 --placement round-robin
partitions "$LEDGER" >"$WORK/ledger-before"
cat "$WORK/ledger-before"
isr_full "$LEDGER" || fail "not every partition of $LEDGER has 3 replicas, all in sync"
read -r _ VICTIM _ _ EPOCH0 _ _ < <(awk '$1 == 1' "$WORK/ledger-before") || true
[[ -n ${VICTIM:-} && $VICTIM != 1 ]] || fail "partition 1 of $LEDGER is led by broker '${VICTIM:-}', not broker 2 or 3"
mapfile -t LED < <(awk -v v="$VICTIM" '$2 == v { print $1 }' "$WORK/ledger-before")

# Numbers 1, 2, 3... until $WORK/stop exists (at most a million); the last one goes to
# $WORK/last.
numbered() {
    local i
    for ((i = 1; i <= 1000000; i++)); do
        printf 'n%d:%d\n' $((i % 30)) "$i"
        if ((i % PACE == 0)); then
            [[ -e $WORK/stop ]] && break
            sleep 0.1
        fi
    done
    echo "$((i > 1000000 ? 1000000 : i))" >"$WORK/last"
}
say "a consumer following $LEDGER and a producer of numbered records (acks=all), from the host"
timeout 600 "$WEIR_BIN" --broker "$EXT" consume "$LEDGER" --follow --format '%p %o %v\n' \
    >"$WORK/ledger.txt" 2>"$WORK/consumer.err" &
CONSUMER=$!
numbered | timeout 600 "$WEIR_BIN" --broker "$EXT" produce "$LEDGER" --key-separator : --acks all \
    2>"$WORK/producer.err" &
PRODUCER=$!
consumed() { wc -l <"$WORK/ledger.txt"; }
consumed_over() { (($(consumed) >= $1)); }
wait_until 60 "the consumer printing the first 3000 records" consumed_over 3000

say "compose kill broker$VICTIM (leader of $LEDGER partitions ${LED[*]}, epoch $EPOCH0 for partition 1) after $(consumed) records"
KILLED=$SECONDS # before the command: compose v1 itself takes seconds to start
compose kill "broker$VICTIM"
# Partition 1 led by another broker at a higher epoch; in both topics, every partition led by a
# live broker and the dead one in no ISR.
failed_over() {
    partitions "$LEDGER" >"$WORK/ledger-after" && partitions "$TOPIC" >"$WORK/orders-after" || return 1
    awk -v v="$VICTIM" -v e0="$EPOCH0" '
        FILENAME == ARGV[1] && $1 == 1 && !($2 != v && $5 > e0) { exit 1 }
        $4 != "up" || ("," $7 ",") ~ ("," v ",") { exit 1 }' "$WORK/ledger-after" "$WORK/orders-after"
}
wait_until 60 "a new leader for partition 1 and broker $VICTIM out of every ISR" failed_over
# Timed from the container's death (docker's clock), not the command (compose v1 starts
# slowly): to the controller fencing it (its log) and to describe showing the new leader.
seen=$(date +%s%3N)
died=$(docker inspect --format '{{.State.FinishedAt}}' "$(compose ps -a -q "broker$VICTIM")")
fenced=$(docker logs "$(compose ps -q controller)" 2>&1 |
    awk -v b="broker=$VICTIM " '/broker lease lapsed; fenced/ && index($0, b) { t = $1 } END { print t }')
since() { awk -v ms=$(($2 - $1)) 'BEGIN { printf "%.1f s", ms / 1000 }'; }
if died=$(date -d "$died" +%s%3N 2>/dev/null); then
    f=
    if [[ -n $fenced ]] && fenced=$(date -d "$fenced" +%s%3N 2>/dev/null); then
        f="fenced by the controller $(since "$died" "$fenced") after it died, "
    fi
    say "failed over: broker $VICTIM ${f}the new leader seen in describe $(since "$died" "$seen") after (lease 3 s):"
else
    say "failed over within $((SECONDS - KILLED)) s of the kill command:"
fi
weir topic describe "$LEDGER" | sed -n '/^PARTITION/,$p'
weir cluster
weir cluster | awk -v v="$VICTIM" '$1 == v { exit !($4 == "DOWN") }' || fail "weir cluster does not show broker $VICTIM DOWN"
at_failover=$(consumed)
wait_until 60 "the consumer going on past the failover" consumed_over $((at_failover + 3000))
say "both go on: $(consumed) records consumed"

say "compose start broker$VICTIM"
STARTED=$SECONDS
compose start "broker$VICTIM"
wait_healthy "broker$VICTIM"
wait_until 60 "broker $VICTIM back in every ISR" isr_full "$TOPIC" "$LEDGER"
say "broker $VICTIM is back in every ISR within $((SECONDS - STARTED)) s of the start command:"
weir topic describe "$LEDGER" | sed -n '/^PARTITION/,$p'

say "the producer's input ends"
touch "$WORK/stop"
rc=0
wait "$PRODUCER" || rc=$?
PRODUCER=
cat "$WORK/producer.err"
((rc == 0)) || fail "the producer exited with status $rc"
N=$(cat "$WORK/last")
grep -q "^produced $N record(s)" "$WORK/producer.err" || fail "the producer did not acknowledge all $N records"
wait_until 60 "the consumer printing all $N records" consumed_over "$N"
sleep 1 # time to print a record twice, if it would
kill "$CONSUMER"
wait "$CONSUMER" 2>/dev/null || true
CONSUMER=
cat "$WORK/consumer.err"
# Every number 1..N once, increasing within each partition (one key's records stay in one).
awk -v n="$N" '
    { if ($3 <= last[$1]) { printf "partition %s: %s after %s\n", $1, $3, last[$1] > "/dev/stderr"; bad = 1 }
      last[$1] = $3; if (seen[$3]++) { printf "%s consumed twice\n", $3 > "/dev/stderr"; bad = 1 }
      per[$1]++ }
    END {
        for (i = 1; i <= n; i++) if (!(i in seen)) { if (missing++ < 10) printf "%d never consumed\n", i > "/dev/stderr" }
        if (missing) { printf "%d numbers never consumed\n", missing > "/dev/stderr"; bad = 1 }
        for (p in per) printf "partition %s: %d records\n", p, per[p]
        exit bad
    }' "$WORK/ledger.txt" || fail "the numbered records were lost, repeated or reordered (above)"
say "all $N numbers consumed once, in order per partition, across the failover and the rejoin"

# --- a consumer group across a controller restart ------------------------------------------
committed() { weir group describe ci | awk '$1 == "'"$TOPIC"'" { print $2, $3 }'; }
say "consumer group ci: 1000 records, committed on exit"
weir consume "$TOPIC" --group ci --count 1000 --format '%p %o\n' >"$WORK/g1.txt"
[[ $(wc -l <"$WORK/g1.txt") -eq 1000 ]] || fail "the group consumer printed $(wc -l <"$WORK/g1.txt") records, not 1000"
weir group describe ci
committed >"$WORK/committed1"
sum=$(awk '$2 != "-" { s += $2 } END { print s + 0 }' "$WORK/committed1")
[[ $sum -eq 1000 ]] || fail "group ci committed $sum records, not the 1000 printed"

say "compose restart controller"
compose restart controller
wait_healthy controller
weir topic list | tee "$WORK/topics"
grep -Eq "^$TOPIC +6 " "$WORK/topics" || fail "topic $TOPIC with 6 partitions is gone after the controller restart"
committed >"$WORK/committed2"
diff "$WORK/committed1" "$WORK/committed2" || fail "group ci's committed offsets changed across the controller restart"
say "topic and committed offsets survived the controller restart"
wait_all_up "$TOPIC"

weir consume "$TOPIC" --group ci --format '%p %o\n' >"$WORK/g2.txt"
n=$(wc -l <"$WORK/g2.txt")
[[ $n -eq $((TOTAL - 1000)) ]] || fail "the group went on with $n records, expected $((TOTAL - 1000))"
dups=$(sort "$WORK/g1.txt" "$WORK/g2.txt" | uniq -d | wc -l)
[[ $dups -eq 0 ]] || fail "$dups records delivered twice to group ci"
weir group describe ci
say "group ci went on after its commit: $n more records, none repeated"
