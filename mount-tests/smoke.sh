#!/usr/bin/env bash
# mount-tests/smoke.sh: a real FUSE mount over a loopback grid of 3 `lafs run` storage nodes.
#
# Creates the nodes and a client node directory (2-of-4, happy 3, as tests/cli_files.rs), makes
# a root directory with `lafs mkdir`, mounts it in the background, writes a file, lists it,
# reads it back, fsyncs it (`sync FILE`), unmounts with `fusermount3 -u`, remounts with a FRESH
# cache directory (so the data must come from the grid) and checks the file again.
#
# Needs root (or FUSE access), /dev/fuse and fusermount3. Every step is bounded by `timeout`.
# With CI=true a missing prerequisite is a failure; otherwise the script says why and skips.
# LAFS: the binary (default target/ci/lafs if built, else target/debug/lafs, built when missing).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
T=60

skip() {
    if [[ "${CI:-}" == "true" ]]; then
        echo "smoke: FAIL: $*" >&2
        exit 1
    fi
    echo "smoke: SKIP: $*"
    exit 0
}
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

[[ -e /dev/fuse ]] || skip "no /dev/fuse"
command -v fusermount3 >/dev/null || skip "no fusermount3 (apt-get install fuse3)"

# Prefer the binary the README's test command just built (the `ci` profile), else a debug build.
target="${CARGO_TARGET_DIR:-$here/target}"
if [[ -z "${LAFS:-}" && -x "$target/ci/lafs" ]]; then LAFS="$target/ci/lafs"; fi
LAFS="${LAFS:-$target/debug/lafs}"
if [[ ! -x "$LAFS" ]]; then
    (cd "$here" && timeout 1800 cargo build --bin lafs) || fail "cargo build"
fi

work="$(mktemp -d)"
pids=()
mnt="$work/mnt"
cleanup() {
    set +e
    if mountpoint -q "$mnt" 2>/dev/null; then
        timeout 10 fusermount3 -u "$mnt" || timeout 10 fusermount3 -uz "$mnt"
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "smoke: creating 3 storage nodes in $work"
for i in 0 1 2; do
    port="$(free_port)"
    timeout $T "$LAFS" create-node --storage "--port=tcp:$port:interface=127.0.0.1" \
        "--location=tcp:127.0.0.1:$port" "--nickname=server$i" --webport=none \
        --reserved-space=0 "$work/server$i" >/dev/null &
done
wait
for i in 0 1 2; do
    "$LAFS" run "$work/server$i" >"$work/server$i.out" 2>"$work/server$i.err" &
    pids+=($!)
done
for i in 0 1 2; do
    timeout $T bash -c "until grep -qx ready '$work/server$i.out'; do sleep 0.1; done" \
        || fail "server$i did not become ready"
done

client="$work/client"
mkdir -p "$client/private"
cat >"$client/tahoe.cfg" <<CFG
[node]
nickname = client

[client]
shares.needed = 2
shares.happy = 3
shares.total = 4

[storage]
enabled = false
CFG
for i in 0 1 2; do
    timeout $T "$LAFS" announcement "$work/server$i" >"$work/ann$i.json" || fail "announcement $i"
done
# The announcements are JSON (valid YAML): merge their "storage" maps.
python3 - "$work"/ann0.json "$work"/ann1.json "$work"/ann2.json >"$client/private/servers.yaml" <<'PY'
import json, sys
out = {"storage": {}}
for f in sys.argv[1:]:
    out["storage"].update(json.load(open(f))["storage"])
print(json.dumps(out, indent=2))
PY

root="$(timeout $T "$LAFS" -d "$client" mkdir)"
[[ "$root" == URI:DIR2* ]] || fail "lafs mkdir printed no directory cap"
echo "tahoe: $root" >"$client/private/aliases"

mkdir -p "$mnt"
mount_it() {
    timeout $T "$LAFS" -d "$client" mount tahoe: "$mnt" \
        -o "cache-dir=$1,write-back-delay=0.2" || fail "mount ($1)"
    mountpoint -q "$mnt" || fail "not mounted after lafs mount returned"
}

echo "smoke: mounting"
mount_it "$work/cache1"
head -c 300000 /dev/urandom >"$work/big.src"
echo "hello from the mount" >"$work/small.src"
timeout $T cp "$work/big.src" "$mnt/big.bin" || fail "write big.bin"
timeout $T cp "$work/small.src" "$mnt/small.txt" || fail "write small.txt"
timeout $T mkdir "$mnt/sub" || fail "mkdir"
timeout $T cp "$work/small.src" "$mnt/sub/inner.txt" || fail "write sub/inner.txt"
listing="$(timeout $T ls "$mnt" | tr '\n' ' ')"
[[ "$listing" == "big.bin small.txt sub " ]] || fail "listing: '$listing'"
timeout $T cmp "$work/big.src" "$mnt/big.bin" || fail "read back big.bin"
timeout $T sync "$mnt/big.bin" "$mnt/small.txt" "$mnt/sub/inner.txt" || fail "sync"
timeout $T sync "$mnt/sub" "$mnt" || fail "sync dirs"

echo "smoke: unmounting"
timeout $T fusermount3 -u "$mnt" || fail "fusermount3 -u"
timeout $T bash -c "while mountpoint -q '$mnt'; do sleep 0.1; done" || fail "still mounted"

# What the grid holds, read by the plain file commands.
timeout $T "$LAFS" -d "$client" get tahoe:big.bin "$work/big.get" || fail "lafs get big.bin"
cmp "$work/big.src" "$work/big.get" || fail "lafs get big.bin differs"

echo "smoke: remounting with a fresh cache, through the mount.lafs helper"
ln -s "$LAFS" "$work/mount.lafs"
timeout $T "$work/mount.lafs" tahoe: "$mnt" -o "node-directory=$client,cache-dir=$work/cache2,_netdev" \
    || fail "mount.lafs"
mountpoint -q "$mnt" || fail "not mounted after mount.lafs returned"
timeout $T cmp "$work/big.src" "$mnt/big.bin" || fail "big.bin after remount"
timeout $T cmp "$work/small.src" "$mnt/small.txt" || fail "small.txt after remount"
timeout $T cmp "$work/small.src" "$mnt/sub/inner.txt" || fail "sub/inner.txt after remount"
echo "unsynced" >"$mnt/nosync.txt" || fail "write nosync.txt"
timeout $T fusermount3 -u "$mnt" || fail "second fusermount3 -u"
timeout $T bash -c "while mountpoint -q '$mnt'; do sleep 0.1; done" || fail "still mounted"

echo "smoke: a foreground mount ended by SIGTERM flushes what was closed without fsync"
"$LAFS" -d "$client" mount --foreground tahoe: "$mnt" -o "cache-dir=$work/cache3" \
    >"$work/fg.log" 2>&1 &
fg=$!
pids+=("$fg")
timeout $T bash -c "until mountpoint -q '$mnt'; do sleep 0.1; done" || fail "foreground mount"
timeout $T cmp "$work/small.src" "$mnt/small.txt" || fail "small.txt in the foreground mount"
[[ "$(timeout $T cat "$mnt/nosync.txt")" == "unsynced" ]] || fail "nosync.txt (flushed at unmount)"
echo "by the foreground mount" >"$mnt/fg.txt" || fail "write fg.txt"
kill -TERM "$fg"
timeout $T bash -c "while kill -0 $fg 2>/dev/null; do sleep 0.1; done" || fail "daemon still running"
mountpoint -q "$mnt" && fail "still mounted after SIGTERM"
[[ "$(timeout $T "$LAFS" -d "$client" get tahoe:fg.txt)" == "by the foreground mount" ]] \
    || fail "fg.txt not on the grid after SIGTERM"
echo "smoke: OK"
