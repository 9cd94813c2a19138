#!/usr/bin/env bash
# The docker stage of CI: the compose cluster (a controller and three brokers) end to end.
#
#   bash docker/ci-test.sh
#
# Skips (exit 0, with a message) where no Docker engine answers or no compose tool exists.
# Otherwise: builds the images (docker/build-images.sh), `compose up -d`, waits for health, and
# from the host (external listeners) and inside the network (internal addresses):
#   - a 6-partition topic, 50,000 keyed records produced and consumed back, per-key order checked;
#   - a broker killed: its partitions reported DOWN with the owner named, the rest still work;
#     started again: its data intact (volume) and its partitions consumed again;
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
    if [[ $rc -ne 0 ]]; then
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

# `topic describe` as "PARTITION LEADER-ID ADDRESS STATE" lines (STATE: up or DOWN).
leaders() {
    weir topic describe "$TOPIC" | awk '
        /^PARTITION/ { t = 1; next }
        t && NF && match($0, /[0-9]+ \([^)]*\)/) {
            l = substr($0, RSTART, RLENGTH); split(l, f, " ")
            gsub(/[()]/, "", f[2])
            print $1, f[1], f[2], (index($0, "DOWN") ? "DOWN" : "up")
        }'
}

# Waits until no partition is reported DOWN.
wait_all_up() {
    local deadline=$((SECONDS + 30))
    while leaders | grep -q DOWN; do
        ((SECONDS < deadline)) || fail "partitions still DOWN after 30 s: $(leaders | grep DOWN | tr '\n' ';')"
        sleep 1
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
for port in 19090 19092 19093 29092 29093 39092 39093; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "host port $port is already in use (another weir cluster? docker compose ls / docker ps)"
    fi
done

say "compose up -d"
compose up -d
wait_healthy controller broker1 broker2 broker3

# --- 50,000 keyed records from the host ----------------------------------------------------
say "topic $TOPIC: 6 partitions over the three brokers (placement round-robin)"
weir topic create "$TOPIC" --partitions 6 --placement round-robin
leaders >"$WORK/leaders"
cat "$WORK/leaders"
[[ $(wc -l <"$WORK/leaders") -eq 6 ]] || fail "describe shows $(wc -l <"$WORK/leaders") partitions, not 6"
for b in 1 2 3; do
    grep -q "^[0-9]* $b localhost:${b}9092 up$" "$WORK/leaders" ||
        fail "broker $b leads no partition, or not at its external address localhost:${b}9092"
done

say "producing $TOTAL keyed records ($KEYS keys x $PER_KEY) from the host"
# Record i: key k(i mod KEYS), value <key>-<n> with n counting that key's records from 1.
awk -v keys=$KEYS -v total=$TOTAL 'BEGIN {
    for (i = 0; i < total; i++) { k = "k" (i % keys); printf "%s:%s-%d\n", k, k, int(i / keys) + 1 }
}' | weir produce "$TOPIC" --key-separator :

say "consuming them back from the host"
weir consume "$TOPIC" --format '%k %v\n' >"$WORK/all.txt"
res=$(check_keyed "$WORK/all.txt") || fail "records out of order or damaged (above)"
read -r n k <<<"$res"
[[ $n -eq $TOTAL && $k -eq $KEYS ]] || fail "consumed $n records of $k keys, expected $TOTAL of $KEYS"
say "consumed $n records, $k keys, every key in order"

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

# --- a broker killed and started again -----------------------------------------------------
mapfile -t B2 < <(awk '$2 == 2 { print $1 }' "$WORK/leaders")
OTHER=$(awk '$2 == 1 { print $1; exit }' "$WORK/leaders")
((${#B2[@]} > 0)) || fail "broker 2 owns no partition"
declare -A HW
for p in "${B2[@]}"; do
    HW[$p]=$(weir consume "$TOPIC" --partition "$p" --format '%o\n' | wc -l)
done
say "compose kill broker2 (partitions ${B2[*]})"
compose kill broker2
deadline=$((SECONDS + 30))
until [[ $(leaders | awk '$2 == 2 && $4 == "DOWN"' | wc -l) -eq ${#B2[@]} ]]; do
    ((SECONDS < deadline)) || fail "broker 2's partitions not reported DOWN 30 s after the kill"
    sleep 1
done
weir topic describe "$TOPIC" | sed -n '/^PARTITION/,$p'
leaders | awk '$4 == "DOWN"' | while read -r p id addr _; do
    [[ $id == 2 && $addr == localhost:29092 ]] || fail "partition $p DOWN but not broker 2's ($id $addr)"
done
weir cluster
weir cluster | awk '$1 == 2 { exit !($4 == "DOWN") }' || fail "weir cluster does not show broker 2 DOWN"
say "broker 2's partitions are DOWN with the owner named; the others still work:"
seq 1 100 | sed 's/^/after-kill:after-kill-/' | weir produce "$TOPIC" --key-separator : --partition "$OTHER"
if out=$(weir consume "$TOPIC" --partition "${B2[0]}" 2>&1); then
    fail "consuming partition ${B2[0]} of the killed broker succeeded: $out"
fi
echo "$out"
[[ $out == *"broker 2"* && $out == *"localhost:29092"* ]] ||
    fail "the error for partition ${B2[0]} does not name broker 2 (localhost:29092)"

say "compose start broker2"
compose start broker2
wait_healthy broker2
wait_all_up
for p in "${B2[@]}"; do
    n=$(weir consume "$TOPIC" --partition "$p" --format '%o\n' | wc -l)
    [[ $n -eq ${HW[$p]} ]] || fail "partition $p holds $n records after the restart, ${HW[$p]} before"
done
weir consume "$TOPIC" --format '%k %v\n' >"$WORK/all2.txt"
res=$(check_keyed "$WORK/all2.txt") || fail "records out of order or damaged (above)"
read -r n k <<<"$res"
TOTAL2=$((TOTAL + 100))
[[ $n -eq $TOTAL2 && $k -eq $((KEYS + 1)) ]] || fail "consumed $n records of $k keys, expected $TOTAL2"
say "broker 2 is back with its data: $n records, every key in order"

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
wait_all_up

weir consume "$TOPIC" --group ci --format '%p %o\n' >"$WORK/g2.txt"
n=$(wc -l <"$WORK/g2.txt")
[[ $n -eq $((TOTAL2 - 1000)) ]] || fail "the group went on with $n records, expected $((TOTAL2 - 1000))"
dups=$(sort "$WORK/g1.txt" "$WORK/g2.txt" | uniq -d | wc -l)
[[ $dups -eq 0 ]] || fail "$dups records delivered twice to group ci"
weir group describe ci
say "group ci went on after its commit: $n more records, none repeated"
