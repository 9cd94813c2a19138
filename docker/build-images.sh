#!/usr/bin/env bash
# Builds the weir image (default tag weir:local) from the repository, with or without a registry.
#
#   1. cargo build --release -p weir-broker -p weir-cli --bins   (a no-op when up to date)
#   2. the base image: $WEIR_BASE_IMAGE (default debian:bookworm-slim) if present or pullable;
#      otherwise weir-base:local, made here in seconds without network: a `docker import` of the
#      exact shared libraries the two binaries load (ldd), the dynamic loader, /etc/passwd and
#      /etc/group with the user weir (10001), /etc/nsswitch.conf and /tmp. Rebuilt only when
#      those libraries change.
#   3. docker build of the top-level Dockerfile on that base, from a staged context holding only
#      the two binaries (so the daemon is sent megabytes, not target/).
#
# Environment:
#   WEIR_IMAGE        the tag to build                     [weir:local]
#   WEIR_BASE_IMAGE   the base to use when available       [debian:bookworm-slim]
#   WEIR_LOCAL_BASE=1 skip the pull: always use weir-base:local
#   WEIR_PROFILE      release, or debug (CI: the binaries `cargo test` already built, instead
#                     of a second, release build of the workspace)  [release]
#   WEIR_SKIP_CARGO=1 use the binaries already in the target dir (CI: `cargo build` resolves
#                     features differently from `cargo test` and would rebuild dependencies)
#   WEIR_STRIP=0      keep the binaries' debug info (line numbers in backtraces; 4x the size)
#   CARGO_TARGET_DIR  where cargo puts the binaries        [<repo>/target]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${WEIR_IMAGE:-weir:local}
WANT_BASE=${WEIR_BASE_IMAGE:-debian:bookworm-slim}
LOCAL_BASE=weir-base:local
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PROFILE=${WEIR_PROFILE:-release}
case $PROFILE in
release) CARGO_PROFILE=(--release) ;;
debug) CARGO_PROFILE=() ;;
*) printf '[build-images] FAILED: WEIR_PROFILE must be release or debug, not %s\n' "$PROFILE" >&2; exit 1 ;;
esac
BIN=$TARGET/$PROFILE
# Bump when the layout of weir-base:local changes, to force a rebuild of it.
BASE_LAYOUT=1

log() { printf '[build-images] %s\n' "$*" >&2; }
die() {
    printf '[build-images] FAILED: %s\n' "$*" >&2
    exit 1
}

command -v docker >/dev/null || die "no docker command on PATH"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

started=$SECONDS

# --- 1. the binaries -----------------------------------------------------------------------
if [[ ${WEIR_SKIP_CARGO:-0} == 1 ]]; then
    log "using the binaries in $BIN as built (WEIR_SKIP_CARGO=1)"
else
    log "cargo build ${CARGO_PROFILE[*]} -p weir-broker -p weir-cli --bins"
    (cd "$ROOT" && cargo build "${CARGO_PROFILE[@]}" -p weir-broker -p weir-cli --bins) ||
        die "cargo build failed"
fi
for b in weir-broker weir; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing after the build"
done

# --- 2. the base image ---------------------------------------------------------------------
make_local_base() {
    command -v ldd >/dev/null || die "ldd not found: cannot make $LOCAL_BASE"
    # Every library path ldd resolves (plus the loader, which it prints without '=>').
    local libs
    libs=$(ldd "$BIN/weir-broker" "$BIN/weir" |
        awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u)
    [[ -n $libs ]] || die "ldd listed no libraries for $BIN/weir-broker (a static binary needs no base: use FROM scratch)"
    if ldd "$BIN/weir-broker" "$BIN/weir" | grep -q 'not found'; then
        die "ldd: a library of the binaries is not found on this host"
    fi
    # glibc loads its NSS modules with dlopen (ldd does not see them); since glibc 2.34 they
    # live in libc itself and these files are stubs, but older hosts need them for DNS.
    local libc_dir nss
    libc_dir=$(dirname "$(grep '/libc\.so' <<<"$libs" | head -1)")
    for nss in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
        [[ -e $libc_dir/$nss ]] && libs+=$'\n'"$libc_dir/$nss"
    done
    libs=$(sort -u <<<"$libs")

    # The fingerprint: the layout version and every library's content.
    local fp
    fp=$({
        echo "layout $BASE_LAYOUT"
        while read -r l; do printf '%s %s\n' "$l" "$(sha256sum <"$l" | cut -d' ' -f1)"; done <<<"$libs"
    } | sha256sum | cut -c1-16)
    if [[ $(docker image inspect --format '{{index .Config.Labels "weir.base.fingerprint"}}' "$LOCAL_BASE" 2>/dev/null) == "$fp" ]]; then
        log "$LOCAL_BASE is up to date (fingerprint $fp)"
        return
    fi

    log "making $LOCAL_BASE from the host's libraries (no registry, no network):"
    local stage
    stage=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$stage'" RETURN
    local root=$stage/rootfs
    mkdir -p "$root"/{etc,tmp,usr/local/bin}
    while read -r l; do
        log "  $l"
        mkdir -p "$root$(dirname "$l")"
        cp -L "$l" "$root$l" # the file itself at the path the loader looks up, no symlinks
    done <<<"$libs"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
weir:x:10001:10001:weir:/var/lib/weir:/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
weir:x:10001:
EOF
    cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
hosts:  files dns
EOF
    chmod 1777 "$root/tmp"
    # Ownership from tar, not from the staging files: no root or chown needed to build it.
    tar --create --file "$stage/rootfs.tar" --directory "$root" --sort=name --mtime=@0 \
        --numeric-owner --owner=0 --group=0 .
    log "  $(du -h "$stage/rootfs.tar" | cut -f1) tarball; docker import"
    docker import --change "LABEL weir.base.fingerprint=$fp" \
        --message "weir base: the host's libraries for weir-broker and weir" \
        "$stage/rootfs.tar" "$LOCAL_BASE" >/dev/null || die "docker import of $LOCAL_BASE failed"
    log "$LOCAL_BASE made (fingerprint $fp)"
}

base=
if [[ ${WEIR_LOCAL_BASE:-0} != 1 ]]; then
    if docker image inspect "$WANT_BASE" >/dev/null 2>&1; then
        base=$WANT_BASE
        log "base image $WANT_BASE: present"
    elif log "base image $WANT_BASE: not present, trying docker pull" &&
        timeout 120 docker pull --quiet "$WANT_BASE" >/dev/null 2>&1; then
        base=$WANT_BASE
        log "base image $WANT_BASE: pulled"
    else
        log "base image $WANT_BASE: cannot be pulled (no registry?); using $LOCAL_BASE"
    fi
fi
if [[ -z $base ]]; then
    make_local_base
    base=$LOCAL_BASE
fi

# --- 3. the image --------------------------------------------------------------------------
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/target/release" "$ctx/docker/empty-dir"
for b in weir-broker weir; do
    if [[ ${WEIR_STRIP:-1} == 1 ]] && command -v strip >/dev/null; then
        # Debug info is most of the binaries' size (80 MB of a release build); symbols stay, so
        # a panic still names its functions.
        strip --strip-debug -o "$ctx/target/release/$b" "$BIN/$b" || die "strip $BIN/$b failed"
    else
        # A hard link when possible: no copy of tens of megabytes.
        ln "$BIN/$b" "$ctx/target/release/$b" 2>/dev/null || cp "$BIN/$b" "$ctx/target/release/$b"
    fi
done
cp "$ROOT/Dockerfile" "$ctx/Dockerfile"
log "docker build --build-arg BASE=$base -t $IMAGE (context: the two binaries, $(du -shL "$ctx" | cut -f1))"
old_id=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# Legacy builder or BuildKit, whichever the docker CLI uses here: the Dockerfile has no RUN.
docker build --quiet --build-arg "BASE=$base" --tag "$IMAGE" "$ctx" >/dev/null ||
    die "docker build of $IMAGE failed (rerun without --quiet: docker build --build-arg BASE=$base -t $IMAGE .)"

# The image this build replaced, now untagged: removed, so rebuilds do not pile up (kept if a
# container still uses it).
new_id=$(docker image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n $old_id && $old_id != "$new_id" ]] &&
    [[ $(docker image inspect --format '{{len .RepoTags}}' "$old_id" 2>/dev/null) == 0 ]]; then
    docker rmi "$old_id" >/dev/null 2>&1 && log "removed the previous $IMAGE (${old_id:7:12})" || true
fi
# The binaries must run on the base (a base with an older glibc than the build host's fails here,
# not later as a health check that never passes).
version=$(docker run --rm --entrypoint /usr/local/bin/weir-broker "$IMAGE" --version 2>&1) ||
    die "weir-broker does not run in $IMAGE on $base: $version (a base with an older glibc than this host's? WEIR_LOCAL_BASE=1 uses the host's own libraries)"
log "$IMAGE runs: $version"
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE on $base: $((size / 1024 / 1024)) MiB, in $((SECONDS - started)) s"
