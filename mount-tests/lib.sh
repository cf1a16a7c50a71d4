# mount-tests/lib.sh: shared set-up for the real-mount tests. Source it from a test script:
#
#   here="$(cd "$(dirname "$0")/.." && pwd)"; source "$here/mount-tests/lib.sh"
#   lib_init NAME            # work dir $work, cleanup trap, $LAFS located or built
#   lib_grid 3               # 3 `lafs run` storage nodes + client node dir $client (2-of-4, happy 3)
#   lib_mount "$mnt" [OPTS]  # `lafs mount tahoe: $mnt -o cache-dir=...,OPTS`, returns once mounted
#   lib_umount "$mnt"        # fusermount3 -u and wait until it is gone
#
# Every step is bounded by `timeout`. With CI=true a missing prerequisite is a failure
# (`lib_skip` fails); otherwise the script says why and exits 0.
# LAFS: the binary (default target/ci/lafs if built, else target/debug/lafs, built when missing).
# Each test script must be runnable on its own and clean up after itself (mounts, processes, files).

lib_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T="${T:-60}"
lib_name=mount-test
lib_pids=()
lib_mounts=()

lib_skip() {
    if [[ "${CI:-}" == "true" ]]; then
        echo "$lib_name: FAIL (missing prerequisite): $*" >&2
        exit 1
    fi
    echo "$lib_name: SKIP: $*"
    exit 0
}
fail() { echo "$lib_name: FAIL: $*" >&2; exit 1; }
say() { echo "$lib_name: $*"; }

lib_cleanup() {
    set +e
    local m p
    for m in "${lib_mounts[@]}"; do
        if mountpoint -q "$m" 2>/dev/null; then
            timeout 20 fusermount3 -u "$m" || timeout 10 fusermount3 -uz "$m"
        fi
    done
    for p in "${lib_pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${lib_pids[@]}"; do wait "$p" 2>/dev/null; done
    # Mount daemons that outlived their unmount (they are ours: they run with our client dir).
    if [[ -n "${client:-}" ]]; then pkill -f -- "-d $client" 2>/dev/null; fi
    if [[ -z "${LIB_KEEP:-}" ]]; then rm -rf "$work"; else echo "$lib_name: kept $work"; fi
}

# lib_init NAME: prerequisites, $LAFS, $work (a fresh temporary directory), the cleanup trap.
lib_init() {
    lib_name="$1"
    [[ -e /dev/fuse ]] || lib_skip "no /dev/fuse"
    command -v fusermount3 >/dev/null || lib_skip "no fusermount3 (apt-get install fuse3)"
    local target="${CARGO_TARGET_DIR:-$lib_here/target}"
    if [[ -z "${LAFS:-}" && -x "$target/ci/lafs" ]]; then LAFS="$target/ci/lafs"; fi
    LAFS="${LAFS:-$target/debug/lafs}"
    if [[ ! -x "$LAFS" ]]; then
        (cd "$lib_here" && timeout 1800 cargo build --bin lafs) || fail "cargo build"
    fi
    work="$(mktemp -d "/tmp/lafs-$lib_name.XXXXXX")"
    trap lib_cleanup EXIT
}

lib_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# lib_grid N [NEEDED HAPPY TOTAL]: N storage nodes ($work/serverI) running, a client node
# directory $client whose servers.yaml lists them, and a root directory under alias `tahoe:`
# ($root holds its write cap).
lib_grid() {
    local n="$1" needed="${2:-2}" happy="${3:-3}" total="${4:-4}" i port
    for ((i = 0; i < n; i++)); do
        port="$(lib_free_port)"
        timeout $T "$LAFS" create-node --storage "--port=tcp:$port:interface=127.0.0.1" \
            "--location=tcp:127.0.0.1:$port" "--nickname=server$i" --webport=none \
            --reserved-space=0 "$work/server$i" >/dev/null || fail "create-node server$i"
    done
    for ((i = 0; i < n; i++)); do
        "$LAFS" run "$work/server$i" >"$work/server$i.out" 2>"$work/server$i.err" &
        lib_pids+=($!)
    done
    for ((i = 0; i < n; i++)); do
        timeout $T bash -c "until grep -qx ready '$work/server$i.out'; do sleep 0.1; done" \
            || fail "server$i did not become ready"
    done
    client="$work/client"
    mkdir -p "$client/private"
    cat >"$client/tahoe.cfg" <<CFG
[node]
nickname = client

[client]
shares.needed = $needed
shares.happy = $happy
shares.total = $total

[storage]
enabled = false
CFG
    local anns=()
    for ((i = 0; i < n; i++)); do
        timeout $T "$LAFS" announcement "$work/server$i" >"$work/ann$i.json" || fail "announcement $i"
        anns+=("$work/ann$i.json")
    done
    # The announcements are JSON (valid YAML): merge their "storage" maps.
    python3 - "${anns[@]}" >"$client/private/servers.yaml" <<'PY'
import json, sys
out = {"storage": {}}
for f in sys.argv[1:]:
    out["storage"].update(json.load(open(f))["storage"])
print(json.dumps(out, indent=2))
PY
    root="$(timeout $T "$LAFS" -d "$client" mkdir)"
    [[ "$root" == URI:DIR2* ]] || fail "lafs mkdir printed no directory cap"
    echo "tahoe: $root" >"$client/private/aliases"
}

# lib_mount MOUNTPOINT [EXTRA_OPTIONS]: mounts `tahoe:` with a cache dir of its own
# ($MOUNTPOINT.cache unless EXTRA_OPTIONS names one); returns once mounted.
lib_mount() {
    local mnt="$1" extra="${2:-}" opts
    mkdir -p "$mnt"
    opts="cache-dir=$mnt.cache"
    if [[ "$extra" == *cache-dir=* ]]; then opts="$extra"; elif [[ -n "$extra" ]]; then opts="$opts,$extra"; fi
    lib_mounts+=("$mnt")
    timeout $T "$LAFS" -d "$client" mount tahoe: "$mnt" -o "$opts" || fail "mount $mnt"
    mountpoint -q "$mnt" || fail "not mounted after lafs mount returned"
}

# lib_umount MOUNTPOINT: unmounts and waits until the mount is gone.
lib_umount() {
    local mnt="$1"
    timeout $T fusermount3 -u "$mnt" || fail "fusermount3 -u $mnt"
    timeout $T bash -c "while mountpoint -q '$mnt'; do sleep 0.1; done" || fail "$mnt still mounted"
}
