#!/usr/bin/env bash
# mount-tests/smoke.test.sh: a real FUSE mount over a loopback grid of 3 `lafs run` storage nodes.
#
# Mounts `tahoe:` in the background, writes files, lists and reads them back, fsyncs them,
# checks `lafs status` and the hidden status file, unmounts with `lafs umount` (which waits for
# the daemon), checks the grid with `lafs get`, remounts with a FRESH cache directory through
# the `mount.lafs` helper (so the data must come from the grid), then unmounts with
# `fusermount3 -u` and remounts at once, several times: the old flake (an exiting daemon's
# fuser unmounting the NEXT mount at the same place) must not come back. Last, a foreground
# mount ended by SIGTERM must unmount and upload what was closed without fsync.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=mount-tests/lib.sh
source "$here/mount-tests/lib.sh"
lib_init smoke
say "creating 3 storage nodes in $work"
lib_grid 3
mnt="$work/mnt"

say "mounting"
lib_mount "$mnt" "cache-dir=$work/cache1,write-back-delay=0.2"
head -c 300000 /dev/urandom >"$work/big.src"
echo "hello from the mount" >"$work/small.src"
timeout $T cp "$work/big.src" "$mnt/big.bin" || fail "write big.bin"
timeout $T cp "$work/small.src" "$mnt/small.txt" || fail "write small.txt"
timeout $T mkdir "$mnt/sub" || fail "mkdir"
timeout $T cp "$work/small.src" "$mnt/sub/inner.txt" || fail "write sub/inner.txt"
listing="$(timeout $T ls -A "$mnt" | tr '\n' ' ')"
[[ "$listing" == "big.bin small.txt sub " ]] || fail "listing: '$listing'"
timeout $T cmp "$work/big.src" "$mnt/big.bin" || fail "read back big.bin"
# statfs(2) through the kernel: NAME_MAX 255, 4 KiB blocks, some free space and inodes.
read -r namelen bsize bfree ffree < <(timeout $T stat -f -c '%l %S %f %d' "$mnt") || fail "statfs"
[[ "$namelen" == 255 && "$bsize" == 4096 && "$bfree" -gt 0 && "$ffree" -gt 0 ]] \
    || fail "statfs: namelen=$namelen bsize=$bsize bfree=$bfree ffree=$ffree"
timeout $T sync "$mnt/big.bin" "$mnt/small.txt" "$mnt/sub/inner.txt" || fail "sync"
timeout $T sync "$mnt/sub" "$mnt" || fail "sync dirs"

say "status"
timeout $T "$LAFS" status "$mnt" >"$work/status.txt" || fail "lafs status"
grep -q "^tahoe: on $mnt (read-write, pid [0-9]*)$" "$work/status.txt" || fail "status: $(cat "$work/status.txt")"
timeout $T "$LAFS" status --json "$mnt" >"$work/status.json" || fail "lafs status --json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["source"]=="tahoe:" and d["exits_on_unmount"], d' \
    "$work/status.json" || fail "status json: $(cat "$work/status.json")"
grep -q "URI:" "$work/status.json" && fail "a cap in the status file"
[[ -r "$mnt/.lafs-status" && ! -e "$mnt/sub/.lafs-status" ]] || fail "status file placement"
# The virtual names are reserved in the root: a change naming them fails with EPERM and touches
# no grid entry (a grid entry of that name would be hidden behind the virtual file).
python3 - "$mnt" <<'PY' || fail "changes naming the virtual files"
import errno, os, sys
m = sys.argv[1]
for f, args in [(os.rename, (m + "/small.txt", m + "/.lafs-status")),
                (os.rename, (m + "/.lafs-control", m + "/moved")),
                (os.unlink, (m + "/.lafs-status",))]:
    try:
        f(*args)
    except OSError as e:
        assert e.errno == errno.EPERM, (f.__name__, args, e)
    else:
        raise AssertionError((f.__name__, args, "succeeded"))
assert sorted(os.listdir(m)) == ["big.bin", "small.txt", "sub"], os.listdir(m)
PY

say "unmounting with lafs umount"
timeout $T "$LAFS" umount "$mnt" || fail "lafs umount"
mountpoint -q "$mnt" && fail "still mounted after lafs umount"

# What the grid holds, read by the plain file commands.
timeout $T "$LAFS" -d "$client" get tahoe:big.bin "$work/big.get" || fail "lafs get big.bin"
cmp "$work/big.src" "$work/big.get" || fail "lafs get big.bin differs"

say "remounting with a fresh cache, through the mount.lafs helper"
ln -s "$LAFS" "$work/mount.lafs"
timeout $T "$work/mount.lafs" tahoe: "$mnt" -o "node-directory=$client,cache-dir=$work/cache2,_netdev" \
    || fail "mount.lafs"
mountpoint -q "$mnt" || fail "not mounted after mount.lafs returned"
timeout $T cmp "$work/big.src" "$mnt/big.bin" || fail "big.bin after remount"
timeout $T cmp "$work/small.src" "$mnt/small.txt" || fail "small.txt after remount"
timeout $T cmp "$work/small.src" "$mnt/sub/inner.txt" || fail "sub/inner.txt after remount"
echo "unsynced" >"$mnt/nosync.txt" || fail "write nosync.txt"

for i in 1 2 3; do
    say "fusermount3 -u and an immediate remount ($i)"
    lib_umount "$mnt"
    timeout $T "$work/mount.lafs" tahoe: "$mnt" -o "node-directory=$client,cache-dir=$work/cache-r$i" \
        || fail "remount $i"
    # The old daemon's late second unmount came within a few hundred ms of its exit.
    sleep 1.5
    mountpoint -q "$mnt" || fail "remount $i: the mount went away"
    timeout $T cmp "$work/small.src" "$mnt/small.txt" || fail "small.txt in remount $i"
done
lib_umount "$mnt"

say "a foreground mount ended by SIGTERM flushes what was closed without fsync"
"$LAFS" -d "$client" mount --foreground tahoe: "$mnt" -o "cache-dir=$work/cache3" \
    >"$work/fg.log" 2>&1 &
fg=$!
lib_pids+=("$fg")
timeout $T bash -c "until mountpoint -q '$mnt'; do sleep 0.1; done" || fail "foreground mount"
timeout $T cmp "$work/small.src" "$mnt/small.txt" || fail "small.txt in the foreground mount"
[[ "$(timeout $T cat "$mnt/nosync.txt")" == "unsynced" ]] || fail "nosync.txt (flushed at unmount)"
echo "by the foreground mount" >"$mnt/fg.txt" || fail "write fg.txt"
kill -TERM "$fg"
timeout $T bash -c "while kill -0 $fg 2>/dev/null; do sleep 0.1; done" || fail "daemon still running"
mountpoint -q "$mnt" && fail "still mounted after SIGTERM"
[[ "$(timeout $T "$LAFS" -d "$client" get tahoe:fg.txt)" == "by the foreground mount" ]] \
    || fail "fg.txt not on the grid after SIGTERM"
say "OK"
