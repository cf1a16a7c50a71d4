#!/usr/bin/env bash
# mount-tests/powercut.test.sh: a power cut under the write-back cache, on a disk that really
# loses what was not synced.
#
# The cache dir lives on a small ext4 on a loop device (backing file in /dev/shm, else in the
# work dir), mounted commit=600,noauto_da_alloc, with the kernel's periodic write-back off
# (vm.dirty_writeback_centisecs=0, vm.dirty_expire_centisecs=360000; restored on exit, and by a
# watchdog should this script be killed): what the daemon did not fdatasync stays in the page
# cache, out of the backing file. The workload (powercut.py): 25 files written and fsync'd, an
# rsync of a generated tree, then overwrites (truncating and in place), renames, moves to another
# directory, a replace by rename, an unlink, new files, some fsync'd, then 3 s of quiet (every
# closed file is sealed), then a loop of the same changes and a second rsync, with one file held
# open half rewritten. write-back-delay=600: nothing reaches the grid but what fsync sends.
# The cut: kill -9 of the daemon and at once a copy of the backing file (taken again if the loop
# device wrote anything while it was copied): the disk as a power cut leaves it. The copy is
# loop-mounted (ext4 replays its journal) and mounted again with that cache, in a new boot: the
# script runs in a mount namespace of its own, and /proc/sys/kernel/random/boot_id is bound to a
# new id for the mounts after the cut, as a reboot would change it (the daemon tells a power cut
# from a daemon crash by the boot id, SEMANTICS.md). Checks:
# 1. before any remount, every file whose fsync returned (and not changed since) is on the grid;
# 2. the daemon starts on the cut cache; the file held open is set aside in recovered/;
# 3. through that mount: every name under w/ shows one of the states it had since its last
#    barrier (its fsync, or the quiet time), as a complete version of that file, never torn or
#    mixed; nothing durable is lost (powercut.py check); the first rsync's tree is complete; of
#    the second, every file there (rsync's temporary files too) is complete;
# 4. after `lafs umount --flush` (which publishes what the replay left pending), a mount with a FRESH
#    cache shows the same (same checks, and the same manifest as the cut cache's mount).
# LAFS_POWERCUT_SAME_BOOT=1 leaves the boot id alone (the daemon then takes the cut for a daemon
# crash and trusts the torn files: the test must fail; a check of the check).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_name=powercut
[[ "$(id -u)" == 0 ]] || lib_skip "needs root (loop device, mount, vm sysctls)"
for c in unshare losetup mkfs.ext4 rsync; do
    command -v "$c" >/dev/null || lib_skip "no $c"
done
[[ -w /proc/sys/vm/dirty_writeback_centisecs ]] || lib_skip "/proc/sys/vm not writable"
if [[ -z "${LAFS_POWERCUT_NS:-}" ]]; then
    # A mount namespace of our own: the boot id bind below stays in it.
    timeout 10 unshare -m true 2>/dev/null || lib_skip "unshare -m failed (no mount namespaces)"
    LAFS_POWERCUT_NS=1 exec timeout 600 unshare -m --propagation private bash "$0" "$@"
fi
probe="$(mktemp)"
echo probe >"$probe"
{ timeout 10 mount --bind "$probe" /proc/sys/kernel/random/boot_id \
    && timeout 10 umount /proc/sys/kernel/random/boot_id; } 2>/dev/null \
    || { rm -f "$probe"; lib_skip "cannot bind a file over /proc/sys/kernel/random/boot_id"; }
rm -f "$probe"
lib_init powercut
start="$(now)"

loopdevs=() # attached by us and not yet detached
img_dir=/dev/shm
[[ -d $img_dir && -w $img_dir ]] || img_dir="$work"
imgs=()
declare -A saved_sysctl=()
restore_sysctls() {
    local k
    for k in "${!saved_sysctl[@]}"; do echo "${saved_sysctl[$k]}" >"/proc/sys/vm/$k" || true; done
    saved_sysctl=()
}
set_sysctl() { # NAME VALUE, the old value saved once
    [[ -n "${saved_sysctl[$1]:-}" ]] || saved_sysctl[$1]="$(cat "/proc/sys/vm/$1")"
    echo "$2" >"/proc/sys/vm/$1"
}
pc_cleanup() {
    set +e
    restore_sysctls
    local m d
    for m in "${lib_mounts[@]}"; do
        mountpoint -q "$m" 2>/dev/null && { timeout 20 fusermount3 -u "$m" || timeout 10 fusermount3 -uz "$m"; }
    done
    if [[ -n "${client:-}" ]]; then pkill -9 -f -- "-d $client" 2>/dev/null; sleep 0.5; fi
    mountpoint -q "$work/cachefs" 2>/dev/null && { timeout 30 umount "$work/cachefs" || timeout 10 umount -l "$work/cachefs"; }
    for d in "${loopdevs[@]}"; do timeout 20 losetup -d "$d" 2>/dev/null; done
    rm -f "${imgs[@]}"
    lib_cleanup
}
trap pc_cleanup EXIT
trap 'exit 1' INT TERM HUP

cfs="$work/cachefs"
cache="$cfs/cache"
mnt="$work/mnt"
log="$work/ops.log"
pc() { python3 "$here/mount-tests/powercut.py" "$@"; }

# The cache disk.
img="$(mktemp "$img_dir/lafs-powercut.XXXXXX")"
imgs+=("$img" "$img.cut")
truncate -s 256M "$img"
loop="$(timeout $T losetup -f --show "$img")" || lib_skip "no loop device (losetup -f $img failed)"
loopdevs+=("$loop")
# Inode tables and journal initialised now: no lazy-init thread writes to the disk later.
timeout 120 mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$loop" || fail "mkfs.ext4 $loop"
mkdir -p "$cfs"
timeout $T mount -o commit=600,noauto_da_alloc "$loop" "$cfs" || fail "mount $loop"
say "cache disk: ext4 on $loop (backing file in $img_dir)"

lib_grid 3
src="$work/src"
src2="$work/src2"
tree_gen "$src" 100 5 20 || fail "generating the source tree"
tree_gen "$src2" 300 6 20 || fail "generating the second tree"
lib_mount "$mnt" "cache-dir=$cache,write-back-delay=600"
daemon="$(pgrep -f -- "mount --foreground tahoe: $mnt( |\$)")" || fail "no mount daemon found"
[[ "$daemon" =~ ^[0-9]+$ ]] || fail "more than one mount daemon: $daemon"

t0="$(now)"
timeout 120 python3 "$here/mount-tests/powercut.py" base "$mnt" "$log" || fail "workload: base"
say "25 files written and fsync'd: $(elapsed "$t0") s"

# The watchdog restores the sysctls should this script die without its trap (SIGKILL).
wb_old="$(cat /proc/sys/vm/dirty_writeback_centisecs)"
ex_old="$(cat /proc/sys/vm/dirty_expire_centisecs)"
setsid timeout 900 bash -c "
    while kill -0 $$ 2>/dev/null; do sleep 1; done
    [[ \$(cat /proc/sys/vm/dirty_writeback_centisecs) == 0 ]] && echo $wb_old >/proc/sys/vm/dirty_writeback_centisecs
    [[ \$(cat /proc/sys/vm/dirty_expire_centisecs) == 360000 ]] && echo $ex_old >/proc/sys/vm/dirty_expire_centisecs
" </dev/null >/dev/null 2>&1 &
set_sysctl dirty_writeback_centisecs 0
set_sysctl dirty_expire_centisecs 360000

t0="$(now)"
timeout 300 rsync -a "$src/" "$mnt/rs/" || fail "rsync into the mount"
say "rsync of $(find "$src" -type f | wc -l) files: $(elapsed "$t0") s"
timeout 120 python3 "$here/mount-tests/powercut.py" settle "$mnt" "$log" || fail "workload: settle"
python3 "$here/mount-tests/powercut.py" churn "$mnt" "$log" >"$work/churn.out" 2>&1 &
churn=$!
timeout 300 rsync -a --bwlimit=100 "$src2/" "$mnt/rs2/" >"$work/rsync2.out" 2>&1 &
rs2=$!
# Cut once the loop has made changes for a while, fsync'd some, and the rsync is under way.
after_settle() { sed -n '/"settled"/,$p' "$log" | grep -c "$1" || true; }
timeout 60 bash -c "$(declare -f after_settle); log='$log'
    until (( \$(after_settle '\"fsync\"') >= 3 && \$(after_settle '\"write\"') >= 15 )) \
        && (( \$(find '$mnt/rs2' -type f 2>/dev/null | wc -l) >= 20 )); do sleep 0.1; done" \
    || fail "the workload did not get going within 60 s: $(tail -n 3 "$work/churn.out")"
kill -0 "$churn" 2>/dev/null || fail "the churn ended before the cut: $(tail -n 5 "$work/churn.out")"
kill -0 "$rs2" 2>/dev/null || fail "the second rsync ended before the cut; make its tree bigger"
nrs2="$(find "$mnt/rs2" -type f | wc -l)"

# The cut: the daemon dies, and the disk keeps only what reached it.
disk_writes() { awk '{print $5, $9, $12, $16}' "/sys/block/${loop#/dev/}/stat"; }
kill -9 "$daemon"
cut_t="$(now)"
timeout 30 bash -c "while [[ -e /proc/$daemon ]] && ! grep -q '^State:.*Z' /proc/$daemon/status 2>/dev/null; do sleep 0.01; done" \
    || fail "daemon survived SIGKILL"
copied=0
for try in 1 2 3 4 5; do
    before="$(disk_writes)"
    timeout 60 cp --sparse=always "$img" "$img.cut" || fail "copying the cache disk"
    after="$(disk_writes)"
    # Writes completed, in flight, discards, flushes: unchanged and none in flight.
    if [[ "$before" == "$after" && "$(cut -d' ' -f2 <<<"$after")" == 0 ]]; then copied=1; break; fi
    say "the cache disk was written during copy $try ($before -> $after); copying again"
done
((copied)) || fail "the cache disk did not stay still for a copy"
restore_sysctls
say "cut: $(wc -l <"$log") changes logged, $(after_settle '"write"') writes and $(after_settle '"fsync"') fsyncs after the quiet time, $nrs2 files of the second rsync there"
kill "$churn" "$rs2" 2>/dev/null || true
wait "$churn" "$rs2" 2>/dev/null || true
timeout 30 fusermount3 -uz "$mnt" || fail "fusermount3 -uz of the dead mount"
timeout 60 umount "$cfs" || fail "umount of the old cache disk"
timeout 20 losetup -d "$loop" || fail "losetup -d $loop"
loopdevs=()
rm -f "$img"

# 1. What fsync acknowledged is on the grid.
n=0
while read -r name key ver; do
    timeout 60 "$LAFS" -d "$client" get "tahoe:w/$name" "$work/got" || fail "fsync'd w/$name: lafs get failed"
    cmp -s <(pc content "$key" "$ver") "$work/got" || fail "fsync'd w/$name on the grid is not $key v$ver"
    n=$((n + 1))
done < <(pc synced "$log")
((n >= 5)) || fail "only $n fsync'd files unchanged since"
say "1: all $n files fsync'd (and unchanged since) are on the grid"

# 2. The disk as the cut left it, in a new boot.
loop="$(timeout $T losetup -f --show "$img.cut")" || fail "losetup of the copy"
loopdevs+=("$loop")
timeout 60 mount "$loop" "$cfs" || fail "mount of the cut cache disk (ext4 journal replay)"
if [[ -z "${LAFS_POWERCUT_SAME_BOOT:-}" ]]; then
    python3 -c 'import uuid; print(uuid.uuid4())' >"$work/boot_id"
    timeout $T mount --bind "$work/boot_id" /proc/sys/kernel/random/boot_id || fail "binding a new boot id"
    [[ "$(cat /proc/sys/kernel/random/boot_id)" == "$(cat "$work/boot_id")" ]] || fail "the boot id did not change"
fi
logsize="$(stat -c %s "$client/logs/mount.log")"
t0="$(now)"
lib_mount "$mnt" "cache-dir=$cache"
tail -c +"$((logsize + 1))" "$client/logs/mount.log" >"$work/mount2.log"
set_aside=()
[[ -d "$cache/recovered" ]] && mapfile -t set_aside < <(ls "$cache/recovered" | sed 's/^[0-9]*-//')
say "2: mounted the cut cache in $(elapsed "$t0") s; ${#set_aside[@]} files set aside in recovered/; of w/ (with the time from the start of their last change to the cut): $(pc ages "$log" "$cut_t" "${set_aside[@]}")"
grep 'power cut:' "$work/mount2.log" | grep -m 3 -F -e '"b' -e '"n' | sed 's/.*power cut: /  power cut: /' || true
# The log names every entry set aside.
n="$(grep -c 'power cut: ' "$work/mount2.log" || true)"
((n == ${#set_aside[@]})) || fail "${#set_aside[@]} files set aside, the log names $n"
if grep ' ERROR ' "$work/mount2.log" | grep -v 'Not Implemented' | head -n 5 | grep .; then
    fail "errors in the log of the mount after the cut"
fi

# 3. Through the cut cache.
check_all() {
    local what="$1" out
    out="$(pc check "$mnt" "$log")" || fail "$what: $out"
    say "$what: w/: $out"
    tree_compare "$src" "$mnt/rs" "$what: the first rsync"
    out="$(pc partial "$src2" "$mnt/rs2")" || fail "$what: the second rsync: $out"
    say "$what: the second rsync: $out"
}
# Every entry of the three trees; directories without their mtime (the filesystem's own).
manifest() {
    local d
    for d in w rs rs2; do
        tree_manifest "$mnt/$d" | awk -F'\t' -v OFS='\t' -v d="$d" '$2 == "d" { $6 = "-" } { print d "/" $0 }'
    done
}
t0="$(now)"
check_all "3: the cut cache"
ls "$cache/recovered" 2>/dev/null | grep -q -- '-b24$' \
    || fail "w/b24 (held open at the cut) is not in recovered/"
grep -q 'power cut: "b24"' "$work/mount2.log" || fail "the log does not name w/b24 as set aside"
manifest >"$work/manifest.cut" || fail "manifest"
say "3: checked in $(elapsed "$t0") s"
t0="$(now)"
# --flush: everything pending is published, however long it takes (a plain unmount gives up
# after FLUSH_AT_UNMOUNT, leaving the rest in the cache).
timeout 300 "$LAFS" umount --flush "$mnt" || fail "lafs umount --flush: the replay's pending changes were not all published"
! mountpoint -q "$mnt" || fail "$mnt still mounted after lafs umount --flush"
say "lafs umount --flush (uploads and publishes what the replay left pending): $(elapsed "$t0") s"
t0="$(now)"

# 4. From the grid.
lib_mount "$mnt" "cache-dir=$work/cache2"
check_all "4: a fresh cache"
manifest >"$work/manifest.fresh" || fail "manifest"
d="$(diff "$work/manifest.cut" "$work/manifest.fresh")" \
    || fail "the grid differs from what the cut cache's mount showed: $(head -c 2000 <<<"$d")"
lib_umount "$mnt"
say "4: the grid has exactly what the cut cache's mount showed ($(wc -l <"$work/manifest.cut") entries; $(elapsed "$t0") s)"
say "OK ($(elapsed "$start") s)"
