#!/usr/bin/env bash
# mount-tests/mounting.test.sh: the ways of mounting and unmounting that users have besides
# `lafs mount tahoe: DIR`, each on a real mount.
# - `mount -t lafs` through the helper `/sbin/mount.lafs` (a link to the binary, put there for
#   the test and removed after), listed as type `fuse.lafs`, unmounted by `umount(8)`: the
#   daemon uploads what is pending and exits;
# - `mount -N PID` (mount(8)'s namespace flag, passed on to the helper): mounted in that mount
#   namespace only;
# - fstab lines (`mount -T FILE MOUNTPOINT`): a read cap, which mounts read-only (EROFS on every
#   change), and `alias:path` of a subdirectory, whose writes land in that subdirectory;
# - user extended attributes through the kernel (set, get, list, remove, XATTR_CREATE,
#   size-0 queries and ERANGE, `trusted.*` refused), still there after a fresh-cache remount;
# - the mount root's mode, mtime and a user xattr, kept by a remount with the same cache, and
#   an rsync -a into the root that changes nothing when run again after a remount;
# - with every server stopped (SIGSTOP), a read that needs the grid waits while stat, listing,
#   status, a cached read and a new write are answered; the read completes once they go on;
# - with the grid down: `lafs umount --flush` fails and leaves the mount up, with the error in
#   `lafs status`; a plain `lafs umount` gives up after a few failed rounds (not the whole
#   2-minute bound) and keeps the data in the cache; the next mount with that cache uploads it;
# - two mounts of one directory: changes to different names merge, the second change of one
#   name is reported (EIO from its fsync, error in its status); the first keeps the name, the
#   second is kept as NAME.conflict.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init mounting
[[ "$(id -u)" == 0 ]] || lib_skip "not root (mount(8) and mount namespaces need root)"
for tool in mount umount unshare nsenter python3; do
    command -v "$tool" >/dev/null || lib_skip "no $tool"
done
lib_grid 3

# The helper where mount(8) looks for it. Whatever was there is put back on exit.
helper=/sbin/mount.lafs
saved=""
if [[ -e "$helper" || -L "$helper" ]]; then
    saved="$work/mount.lafs.saved"
    mv "$helper" "$saved"
fi
ns_pid=""
restore_helper() {
    rm -f "$helper"
    if [[ -n "$saved" ]]; then mv "$saved" "$helper"; fi
    if [[ -n "$ns_pid" ]]; then kill "$ns_pid" 2>/dev/null || true; fi
}
trap 'restore_helper; lib_cleanup' EXIT
ln -s "$(readlink -f "$LAFS")" "$helper"

L() { timeout $T "$LAFS" -d "$client" "$@"; }
# daemon_pid MNT: the pid of the daemon serving MNT (from its status file).
daemon_pid() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$1/.lafs-status"
}
# wait_gone PID WHAT: waits (bounded) until process PID has exited.
wait_gone() {
    timeout 150 bash -c "while kill -0 $1 2>/dev/null; do sleep 0.1; done" || fail "$2: daemon $1 still running"
}
same() { cmp -s "$1" "$2" || fail "$3: content differs"; }

# 1. mount -t lafs (also sloppy: -s), umount(8); mount.lafs --help.
m1="$work/m1"
mkdir -p "$m1"
lib_mounts+=("$m1")
timeout $T "$helper" --help >"$work/help.txt" || fail "mount.lafs --help failed"
grep -q '^usage: mount.lafs' "$work/help.txt" || fail "mount.lafs --help: $(head -3 "$work/help.txt")"
# An option the helper does not know is refused, unless mount(8) is sloppy (-s). The helper's
# exit statuses are mount(8)'s, and mount(8) passes them on: 1 for bad usage, 32 for a failure.
st=0
timeout $T mount -t lafs -o "node-directory=$client,cache-dir=$work/c1,frobnicate" tahoe: "$m1" \
    2>/dev/null || st=$?
[[ $st == 1 ]] || fail "mount -t lafs with an unknown option: exit status $st, not 1 (usage)"
# -f (fake) checks without mounting: a missing node directory (not created) or mount point fails.
st=0
timeout $T "$helper" -f tahoe: "$m1" -o "node-directory=$work/nonode" 2>/dev/null || st=$?
[[ $st == 32 ]] || fail "mount.lafs -f with a missing node directory: exit status $st, not 32"
[[ ! -e "$work/nonode" ]] || fail "mount.lafs created the missing node directory"
st=0
timeout $T "$helper" -f tahoe: "$work/nodir" -o "node-directory=$client" 2>/dev/null || st=$?
[[ $st == 32 ]] || fail "mount.lafs -f with a missing mount point: exit status $st, not 32"
st=0
timeout $T "$helper" -f nosuchalias: "$m1" -o "node-directory=$client" 2>/dev/null || st=$?
[[ $st == 32 ]] || fail "mount.lafs -f with an unknown alias: exit status $st, not 32"
timeout $T "$helper" -f tahoe: "$m1" -o "node-directory=$client" || fail "mount.lafs -f of a good mount"
! mountpoint -q "$m1" || fail "mount.lafs -f mounted"
timeout $T mount -s -t lafs \
    -o "node-directory=$client,cache-dir=$work/c1,_netdev,x-systemd.automount,frobnicate,noexec" \
    tahoe: "$m1" || fail "mount -s -t lafs"
mountpoint -q "$m1" || fail "not mounted after mount -t lafs returned"
findmnt -n -o OPTIONS "$m1" | grep -qE '(^|,)noexec(,|$)' || fail "noexec is not in the mount table"
printf '#!/bin/sh\necho ran\n' >"$m1/x.sh"
chmod 0755 "$m1/x.sh"
if "$m1/x.sh" >/dev/null 2>&1; then fail "a program ran from a noexec mount"; fi
rm "$m1/x.sh"
# As root the mount is made with mount(2) directly: its type must still name the subtype, so
# `findmnt -t fuse.lafs` and `umount -a -t fuse.lafs` find it.
fstype="$(findmnt -n -o FSTYPE,SOURCE "$m1")"
[[ "$fstype" == "fuse.lafs lafs" ]] || fail "mount table type/source: '$fstype', want 'fuse.lafs lafs'"
head -c 300000 /dev/urandom >"$work/a.src"
cp "$work/a.src" "$m1/a.bin"
printf 'hello\n' >"$m1/hello.txt"
pid="$(daemon_pid "$m1")"
timeout $T umount "$m1" || fail "umount(8)"
wait_gone "$pid" "after umount(8)"
L get tahoe:a.bin "$work/a.got" || fail "a.bin not on the grid after umount(8)"
same "$work/a.src" "$work/a.got" "a.bin after umount(8)"
say "mount -t lafs and umount(8): ok (the daemon uploaded before exiting)"

# 2. mount -N: another mount namespace only.
unshare -m --propagation private sleep 600 &
ns_pid=$!
timeout 10 bash -c "until [[ \"\$(readlink /proc/$ns_pid/ns/mnt)\" != \"\$(readlink /proc/self/ns/mnt)\" ]]; do sleep 0.05; done" \
    || fail "unshare did not make a mount namespace"
m2="$work/m2"
mkdir -p "$m2"
timeout $T mount -N "$ns_pid" -t lafs -o "node-directory=$client,cache-dir=$work/c2" tahoe: "$m2" \
    || fail "mount -N"
! mountpoint -q "$m2" || fail "mount -N mounted in our namespace"
timeout $T nsenter -t "$ns_pid" -m mountpoint -q "$m2" || fail "mount -N: not mounted in the target namespace"
timeout $T nsenter -t "$ns_pid" -m cat "$m2/hello.txt" | grep -qx hello || fail "mount -N: cannot read through it"
pid="$(timeout $T nsenter -t "$ns_pid" -m python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$m2/.lafs-status")"
timeout $T nsenter -t "$ns_pid" -m umount "$m2" || fail "umount in the namespace"
wait_gone "$pid" "mount -N"
say "mount -N (namespace): ok"

# 3. fstab: a read cap (read-only) and alias:path of a subdirectory.
ro="$(L ls --json tahoe: | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["ro_uri"])')"
[[ "$ro" == URI:DIR2-RO:* ]] || fail "no read cap from ls --json"
L mkdir tahoe:sub >/dev/null
L mkdir tahoe:sub/deeper >/dev/null
printf 'put there by lafs put\n' | L put - tahoe:sub/deeper/in.txt >/dev/null
m3="$work/m3" m4="$work/m4"
mkdir -p "$m3" "$m4"
cat >"$work/fstab" <<FSTAB
# a read cap: read-only whatever the options say
$ro $m3 lafs node-directory=$client,cache-dir=$work/c3,noauto,_netdev,nofail 0 0
tahoe:sub/deeper $m4 lafs node-directory=$client,cache-dir=$work/c4,write-back-delay=1,noauto 0 0
FSTAB
lib_mounts+=("$m3" "$m4")
timeout $T mount -T "$work/fstab" "$m3" || fail "mount -T fstab (read cap)"
timeout $T mount -T "$work/fstab" "$m4" || fail "mount -T fstab (alias:path)"
# A cap is a secret: the daemon's command line (world-readable in /proc) must not hold it.
pid="$(daemon_pid "$m3")"
[[ -n "$pid" ]] || fail "no daemon pid for the read-cap mount"
if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'URI:'; then fail "the cap is in the daemon's command line"; fi
findmnt -n -o OPTIONS "$m3" | grep -qE '(^|,)ro(,|$)' || fail "the read-cap mount is not ro in the mount table"
same "$work/a.src" "$m3/a.bin" "a.bin through the read cap"
python3 - "$m3" <<'PY' || fail "read-cap mount accepted a change"
import errno, os, sys
m = sys.argv[1]
attempts = {
    "create": lambda: open(os.path.join(m, "new.txt"), "w"),
    "write": lambda: open(os.path.join(m, "hello.txt"), "a"),
    "mkdir": lambda: os.mkdir(os.path.join(m, "d")),
    "unlink": lambda: os.unlink(os.path.join(m, "hello.txt")),
    "rename": lambda: os.rename(os.path.join(m, "hello.txt"), os.path.join(m, "h2")),
    "chmod": lambda: os.chmod(os.path.join(m, "hello.txt"), 0o600),
    "utime": lambda: os.utime(os.path.join(m, "hello.txt")),
    "symlink": lambda: os.symlink("x", os.path.join(m, "l")),
    "setxattr": lambda: os.setxattr(os.path.join(m, "hello.txt"), "user.a", b"1"),
}
for what, f in attempts.items():
    try:
        f()
    except OSError as e:
        if e.errno != errno.EROFS:
            sys.exit(f"{what}: {e} (want EROFS)")
    else:
        sys.exit(f"{what}: succeeded on a read-only mount")
PY
[[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["read_only"])' "$m3/.lafs-status")" == True ]] \
    || fail "status does not say read-only"
grep -qx 'put there by lafs put' "$m4/in.txt" || fail "alias:path mount does not show the subdirectory"
[[ ! -e "$m4/sub" && ! -e "$m4/a.bin" ]] || fail "alias:path mount shows the root"
printf 'written in the subdirectory\n' >"$m4/w.txt"
mkdir "$m4/made"
timeout $T "$LAFS" umount --flush "$m4" || fail "lafs umount --flush of the alias:path mount"
timeout $T "$LAFS" umount "$m3" || fail "lafs umount of the read-cap mount"
[[ "$(L get tahoe:sub/deeper/w.txt)" == 'written in the subdirectory' ]] || fail "w.txt not in tahoe:sub/deeper"
grep -qx made <<<"$(L ls tahoe:sub/deeper)" || fail "made/ not in tahoe:sub/deeper"
! grep -qx w.txt <<<"$(L ls tahoe:)" || fail "w.txt landed in the root"
say "fstab lines (read cap read-only, alias:path subdirectory): ok"

# 4. Extended attributes through the kernel, then from the grid.
m5="$work/m5"
lib_mount "$m5" "cache-dir=$work/c5"
printf 'x\n' >"$m5/x.txt"
mkdir "$m5/xd"
python3 - "$m5" <<'PY' || fail "xattrs"
import ctypes, errno, os, sys
m = sys.argv[1]
f, d = os.path.join(m, "x.txt"), os.path.join(m, "xd")
os.setxattr(f, "user.color", b"blue")
os.setxattr(f, "user.empty", b"")
os.setxattr(f, "user.bin", bytes(range(256)))
os.setxattr(d, "user.on-dir", b"yes")
assert os.getxattr(f, "user.color") == b"blue"
assert os.getxattr(f, "user.empty") == b""
assert os.getxattr(f, "user.bin") == bytes(range(256))
assert sorted(os.listxattr(f)) == ["user.bin", "user.color", "user.empty"], os.listxattr(f)
def err(fn, want):
    try:
        fn()
    except OSError as e:
        assert e.errno == want, f"{e} (want {errno.errorcode[want]})"
    else:
        raise AssertionError(f"no error (want {errno.errorcode[want]})")
err(lambda: os.setxattr(f, "user.color", b"red", os.XATTR_CREATE), errno.EEXIST)
err(lambda: os.setxattr(f, "user.none", b"red", os.XATTR_REPLACE), errno.ENODATA)
err(lambda: os.getxattr(f, "user.none"), errno.ENODATA)
err(lambda: os.removexattr(f, "user.none"), errno.ENODATA)
err(lambda: os.setxattr(f, "trusted.t", b"1"), errno.EOPNOTSUPP)
os.setxattr(f, "user.gone", b"1")
os.removexattr(f, "user.gone")
# The size-0 query and a too-small buffer go through the adapter's own paths.
libc = ctypes.CDLL(None, use_errno=True)
n = libc.getxattr(f.encode(), b"user.color", None, 0)
assert n == 4, n
small = ctypes.create_string_buffer(2)
assert libc.getxattr(f.encode(), b"user.color", small, 2) == -1 and ctypes.get_errno() == errno.ERANGE
n = libc.listxattr(f.encode(), None, 0)
assert n == len(b"user.bin\0user.color\0user.empty\0"), n
assert libc.listxattr(f.encode(), small, 2) == -1 and ctypes.get_errno() == errno.ERANGE
PY
timeout $T "$LAFS" umount --flush "$m5" || fail "lafs umount --flush (xattrs)"
m6="$work/m6"
lib_mount "$m6" "cache-dir=$work/c6"
python3 - "$m6" <<'PY' || fail "xattrs after a fresh-cache remount"
import os, sys
m = sys.argv[1]
f = os.path.join(m, "x.txt")
assert sorted(os.listxattr(f)) == ["user.bin", "user.color", "user.empty"], os.listxattr(f)
assert os.getxattr(f, "user.color") == b"blue"
assert os.getxattr(f, "user.bin") == bytes(range(256))
assert os.getxattr(os.path.join(m, "xd"), "user.on-dir") == b"yes"
PY
timeout $T "$LAFS" umount "$m6" || fail "lafs umount (xattrs remount)"
say "extended attributes (kernel paths, and from the grid): ok"

# 4b. The mount root's attributes (it has no entry in a parent directory: they are kept in the
# cache's journal) survive an unmount and a remount with the same cache: mode, mtime, a user
# xattr; and an rsync -a of a tree into the root, run again after a remount, changes nothing
# (it sets the root's mode and times on every run).
m9="$work/m9"
lib_mount "$m9" "cache-dir=$work/c9"
chmod 0750 "$m9" || fail "chmod of the mount root"
touch -d @1000000000 "$m9" || fail "touch -d of the mount root"
python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.k", b"v")' "$m9" || fail "setxattr on the mount root"
timeout $T "$LAFS" umount "$m9" || fail "lafs umount (root attributes)"
lib_mount "$m9" "cache-dir=$work/c9"
got="$(stat -c '%a %Y' "$m9")"
[[ "$got" == "750 1000000000" ]] || fail "the mount root after a remount: mode and mtime '$got', want '750 1000000000'"
python3 - "$m9" <<'PY' || fail "the mount root's xattr after a remount"
import os, sys
assert os.listxattr(sys.argv[1]) == ["user.k"], os.listxattr(sys.argv[1])
assert os.getxattr(sys.argv[1], "user.k") == b"v"
PY
rsrc="$work/rootsrc"
tree_gen "$rsrc" 40 3 5 || fail "generating the tree for the root"
chmod 0711 "$rsrc"
touch -d '2011-02-03 04:05:06.123456789' "$rsrc"
timeout 300 rsync -a "$rsrc/" "$m9/" || fail "rsync -a into the mount root"
timeout $T "$LAFS" umount "$m9" || fail "lafs umount after the rsync into the root"
lib_mount "$m9" "cache-dir=$work/c9"
out="$(timeout 300 rsync -a --itemize-changes "$rsrc/" "$m9/")" || fail "rsync -a into the root after a remount"
[[ -z "$out" ]] || fail "rsync -a into the mount root after a remount with the same cache changed things:
$(head -n 20 <<<"$out")"
timeout $T "$LAFS" umount "$m9" || fail "lafs umount (root rsync)"
say "mount root attributes kept across a remount with the same cache, rsync rerun a no-op: ok"

# 5a. A hung grid does not hang the mount: with every server stopped (SIGSTOP: connections hang
# instead of failing), a read that needs the grid waits, but requests answered from memory or
# the local cache (stat, listing, the status file, a cached file's read, a new file's write)
# are answered meanwhile; once the servers go on, the waiting read completes.
head -c 3000000 /dev/urandom >"$work/hung.src"
L put "$work/hung.src" tahoe:hung.bin >/dev/null || fail "put hung.bin"
m8="$work/m8"
lib_mount "$m8" "cache-dir=$work/c8"
printf 'cached\n' >"$m8/cached.txt"
timeout $T cat "$m8/cached.txt" >/dev/null || fail "read cached.txt"
stat "$m8/hung.bin" >/dev/null || fail "stat hung.bin"
for ((i = 0; i < 3; i++)); do kill -STOP "${lib_pids[$i]}"; done
cp "$m8/hung.bin" "$work/hung.got" &
reader=$!
sleep 1
kill -0 "$reader" 2>/dev/null || {
    for ((i = 0; i < 3; i++)); do kill -CONT "${lib_pids[$i]}"; done
    fail "the read of hung.bin did not wait for the stopped servers"
}
answered=1
timeout 5 stat "$m8/hung.bin" >/dev/null || answered=0
timeout 5 ls -l "$m8" >/dev/null || answered=0
timeout 5 cat "$m8/.lafs-status" >/dev/null || answered=0
[[ "$(timeout 5 cat "$m8/cached.txt")" == cached ]] || answered=0
timeout 5 bash -c "printf 'new\n' >'$m8/new.txt'" || answered=0
for ((i = 0; i < 3; i++)); do kill -CONT "${lib_pids[$i]}"; done
((answered)) || fail "a request that needs no grid waited on the stopped servers"
timeout 120 bash -c "wait $reader 2>/dev/null; while kill -0 $reader 2>/dev/null; do sleep 0.1; done" \
    || fail "the read of hung.bin never completed after the servers went on"
wait "$reader" || fail "the read of hung.bin failed"
same "$work/hung.src" "$work/hung.got" "hung.bin read across the stopped servers"
timeout $T "$LAFS" umount --flush "$m8" || fail "umount m8"
say "stopped servers: local requests answered meanwhile, the grid read completed after: ok"

# 5. The grid goes away.
m7="$work/m7"
lib_mount "$m7" "cache-dir=$work/c7,write-back-delay=0.5"
ls "$m7" >/dev/null # the root's listing is in memory before the grid goes
for ((i = 0; i < 3; i++)); do kill "${lib_pids[$i]}"; done
for ((i = 0; i < 3; i++)); do wait "${lib_pids[$i]}" 2>/dev/null || true; done
head -c 200000 /dev/urandom >"$work/off.src"
cp "$work/off.src" "$m7/offline.bin"
if timeout 120 "$LAFS" umount --flush "$m7" 2>"$work/flush.err"; then
    fail "lafs umount --flush succeeded with every server down"
fi
grep -q "still mounted" "$work/flush.err" || fail "umount --flush error: $(cat "$work/flush.err")"
mountpoint -q "$m7" || fail "a failed umount --flush unmounted"
timeout $T "$LAFS" status "$m7" >"$work/status.txt"
grep -q "last flush failed" "$work/status.txt" || fail "status does not show the failed flush: $(cat "$work/status.txt")"
same "$work/off.src" "$m7/offline.bin" "offline.bin read back while the grid is down"
say "umount --flush with the grid down: fails, still mounted, error in the status"
start=$SECONDS
timeout 150 "$LAFS" umount "$m7" || fail "plain lafs umount with the grid down"
took=$((SECONDS - start))
say "plain umount with the grid down took $took s"
((took < 60)) || fail "plain umount with the grid down waited $took s (the grid was plainly gone)"
ls "$work/c7/data" | grep -q . || fail "the pending data is not kept in the cache"
# The grid comes back: the next mount with that cache uploads it.
for ((i = 0; i < 3; i++)); do
    : >"$work/server$i.out"
    "$LAFS" run "$work/server$i" >"$work/server$i.out" 2>>"$work/server$i.err" &
    lib_pids[$i]=$!
done
for ((i = 0; i < 3; i++)); do
    timeout $T bash -c "until grep -qx ready '$work/server$i.out'; do sleep 0.1; done" || fail "server$i restart"
done
lib_mount "$m7" "cache-dir=$work/c7"
timeout $T "$LAFS" umount --flush "$m7" || fail "umount --flush once the grid is back"
L get tahoe:offline.bin "$work/off.got" || fail "offline.bin not on the grid after the remount"
same "$work/off.src" "$work/off.got" "offline.bin from the grid"
say "the grid back: the remount with the same cache uploaded what was left: ok"

# 6. Two mounts of one directory (two clients, two caches): changes to different names merge;
# the second of two changes to one name is reported, the first keeps the name and the second is
# kept beside it as NAME.conflict.
ma="$work/ma" mb="$work/mb"
lib_mount "$ma" "cache-dir=$work/ca,dir-refresh=1"
lib_mount "$mb" "cache-dir=$work/cb,dir-refresh=1"
printf 'v0\n' >"$ma/shared.txt"
python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$ma/shared.txt"
timeout 15 bash -c "until [[ \"\$(cat '$mb/shared.txt' 2>/dev/null)\" == v0 ]]; do sleep 0.2; done" \
    || fail "mount B does not see shared.txt"
python3 - "$ma" "$mb" <<'PY' || fail "two writers"
import errno, os, sys
a, b = sys.argv[1], sys.argv[2]
def write_sync(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
# Different names: both land.
write_sync(os.path.join(a, "from-a.txt"), b"a\n")
write_sync(os.path.join(b, "from-b.txt"), b"b\n")
# One name, both based on v0: A first, then B, whose change must not replace A's.
write_sync(os.path.join(a, "shared.txt"), b"version of A\n")
try:
    write_sync(os.path.join(b, "shared.txt"), b"version of B\n")
except OSError as e:
    assert e.errno == errno.EIO, e
else:
    raise AssertionError("B's fsync succeeded over A's change")
PY
grep -q . <<<"$(timeout $T "$LAFS" status "$mb" | grep -i -A3 "last errors")" || fail "the conflict is not in B's status"
[[ "$(L get tahoe:shared.txt)" == "version of A" ]] || fail "the grid does not keep A's version"
[[ "$(L get tahoe:shared.txt.conflict)" == "version of B" ]] || fail "B's version is not kept as shared.txt.conflict"
[[ "$(L get tahoe:from-a.txt)" == a && "$(L get tahoe:from-b.txt)" == b ]] || fail "disjoint changes not merged"
timeout 15 bash -c "until [[ \"\$(cat '$mb/shared.txt' 2>/dev/null)\" == 'version of A' && -e '$mb/from-a.txt' ]]; do sleep 0.2; done" \
    || fail "mount B does not show A's version after the refresh"
[[ "$(cat "$mb/shared.txt.conflict")" == "version of B" ]] || fail "mount B does not show its conflict copy"
timeout 15 bash -c "until [[ -e '$ma/from-b.txt' ]]; do sleep 0.2; done" || fail "mount A does not show from-b.txt"
timeout $T "$LAFS" umount "$ma" || fail "umount A"
timeout $T "$LAFS" umount "$mb" || fail "umount B"
say "two mounts of one directory: disjoint changes merged, the overlapping one reported and kept as a conflict copy: ok"
say "ok"
