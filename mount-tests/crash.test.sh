#!/usr/bin/env bash
# mount-tests/crash.test.sh: kill -9 of the mount daemon during an rsync.
#
# While `rsync -a` copies a generated tree into the mount, one writer writes files and fsyncs
# each (`sync FILE`), recording which returned, and another writes files closed WITHOUT fsync,
# recording which were closed. Then the daemon is killed with SIGKILL and the dead mount lazily
# unmounted (fusermount3 -uz). Checks:
# 1. before any remount, every fsync'd file is on the grid already (`lafs get`);
# 2. a remount with the SAME cache dir shows every fsync'd and every closed file complete (a
#    daemon crash loses no returned call, SEMANTICS.md), the file being written at the kill is
#    absent or a prefix of its content, and every rsync'd name (not rsync's .temp files) is
#    absent or complete; a second rsync then completes the tree;
# 3. after that mount's unmount (which finishes the pending uploads), a mount with a FRESH
#    cache shows all of it from the grid.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init crash
command -v rsync >/dev/null || lib_skip "no rsync"
lib_grid 3
src="$work/src"
tree_gen "$src" 400 3 || fail "generating the source tree"
mnt="$work/mnt"
cache="$work/cache"
lib_mount "$mnt" "cache-dir=$cache"
mkdir "$mnt/s" "$mnt/u"

# content KIND I: the known content of file KIND/I (a few KiB to ~100 KiB; some LIT-sized).
content() {
    if (($2 % 5 == 0)); then printf '%s%d\n' "$1" "$2"; return; fi
    # (without pipefail: `yes` ends by SIGPIPE; the status is head's, i.e. the write's)
    (set +o pipefail; yes "$1 file $2 line" | head -c $((3000 + ($2 * 7919) % 100000)))
}
synced_writer() { # writes s/I, `sync s/I`, records I once sync returned
    local i=0
    while :; do
        content s $i >"$mnt/s/$i" || { echo "write s/$i failed" >>"$work/writers.log"; return 0; }
        local t rc=0
        t="$(now)"
        timeout 60 sync "$mnt/s/$i" || rc=$?
        echo "sync s/$i: rc $rc after $(elapsed "$t") s" >>"$work/writers.log"
        ((rc == 0)) || return 0
        echo $i >>"$work/synced"
        i=$((i + 1))
        sleep 0.3
    done
}
closed_writer() { # writes u/I (no fsync), records I once closed
    local i=0
    while :; do
        content u $i >"$mnt/u/$i" || return 0
        echo $i >>"$work/closed"
        i=$((i + 1))
        sleep 0.2
    done
}
: >"$work/synced"
: >"$work/closed"
: >"$work/writers.log"

daemon="$(pgrep -f -- "mount --foreground tahoe: $mnt( |\$)")" || fail "no mount daemon found"
[[ "$daemon" =~ ^[0-9]+$ ]] || fail "more than one mount daemon: $daemon"
# Paced (--bwlimit, KiB/s: the 3.5 MB tree takes ~90 s) so that it is still running at the kill
# however fast the mount is (mkdir and writes return at local speed), and however slowly the
# fsyncs waited for below return on a loaded machine (35 s was once not enough).
timeout 600 rsync -a --bwlimit=40 "$src/" "$mnt/rs/" >"$work/rsync1.out" 2>&1 &
rs=$!
synced_writer &
sw=$!
closed_writer &
cw=$!
# Kill once the rsync has run a while and several fsyncs have returned.
timeout 120 bash -c "until (( \$(wc -l <'$work/synced') >= 4 )); do sleep 0.1; done" \
    || fail "fewer than 4 fsyncs returned within 120 s: $(tail -n 5 "$work/writers.log"); mount.log: $(grep -i 'warn\|error' "$client/logs/mount.log" | grep -v 'Not Implemented' | tail -n 5)"
# ... and once rsync has renamed at least 40 files into place; those names are recorded.
in_place() { find "$mnt/rs" -type f ! -name '.*' 2>/dev/null | sed "s|^$mnt/rs/||" | sort; }
timeout 300 bash -c "$(declare -f in_place); mnt='$mnt'; until (( \$(in_place | wc -l) >= 40 )); do sleep 0.2; done" \
    || fail "rsync did not put 40 files in place within 300 s: $(tail -n 3 "$work/rsync1.out")"
in_place >"$work/in-place"
kill -0 "$rs" 2>/dev/null || fail "the rsync ended before the kill; make the tree bigger"
kill -9 "$daemon"
timeout 30 bash -c "while kill -0 $daemon 2>/dev/null; do sleep 0.1; done" || fail "daemon survived SIGKILL"
say "killed the daemon with $(wc -l <"$work/synced") files fsync'd, $(wc -l <"$work/closed") closed, $(wc -l <"$work/in-place") of $(find "$src" -type f | wc -l) rsync'd"
timeout 30 fusermount3 -uz "$mnt" || fail "fusermount3 -uz of the dead mount"
for p in "$rs" "$sw" "$cw"; do
    timeout 120 bash -c "while kill -0 $p 2>/dev/null; do sleep 0.1; done" || fail "a writer hung after the kill"
    wait "$p" || true
done
nsynced="$(wc -l <"$work/synced")"
nclosed="$(wc -l <"$work/closed")"

# 1. fsync'd files are on the grid already.
for i in $(cat "$work/synced"); do
    timeout 60 "$LAFS" -d "$client" get "tahoe:s/$i" "$work/got" || fail "fsync'd s/$i: lafs get failed"
    cmp -s <(content s "$i") "$work/got" || fail "fsync'd s/$i on the grid differs"
done
say "1: all $nsynced fsync'd files are on the grid before any remount"

# check_kind KIND RECORDED: every recorded file complete; the next one absent or a prefix.
check_kind() {
    local kind="$1" list="$2" what="$3" i last=-1 size
    for i in $(cat "$list"); do
        [[ -f "$mnt/$kind/$i" ]] || fail "$what: $kind/$i is missing"
        cmp -s <(content "$kind" "$i") "$mnt/$kind/$i" || fail "$what: $kind/$i is not complete"
        last=$i
    done
    i=$((last + 1))
    if [[ -e "$mnt/$kind/$i" ]]; then
        size="$(stat -c %s "$mnt/$kind/$i")"
        cmp -s -n "$size" <(content "$kind" "$i") "$mnt/$kind/$i" \
            || fail "$what: $kind/$i (written at the kill) is not a prefix of its content"
        [[ "$size" -le "$(content "$kind" "$i" | wc -c)" ]] || fail "$what: $kind/$i too long"
    fi
    [[ ! -e "$mnt/$kind/$((i + 1))" ]] || fail "$what: $kind/$((i + 1)) exists but was never written"
}
check_rsynced() {
    local what="$1" n=0 p
    while IFS= read -r -d '' p; do
        p="${p#"$mnt/rs/"}"
        case "/$p" in */.*) continue ;; esac # rsync's temp files
        if [[ -L "$src/$p" ]]; then
            [[ "$(readlink "$mnt/rs/$p")" == "$(readlink "$src/$p")" ]] || fail "$what: symlink rs/$p"
        elif [[ -f "$src/$p" ]]; then
            cmp -s "$src/$p" "$mnt/rs/$p" || fail "$what: rs/$p is present but not complete"
            n=$((n + 1))
        elif [[ ! -d "$src/$p" ]]; then
            fail "$what: rs/$p is not in the source"
        fi
    done < <(find "$mnt/rs" -mindepth 1 -print0)
    echo "$n"
}

# 2. The same cache: nothing lost, nothing half-applied.
t0="$(now)"
lib_mount "$mnt" "cache-dir=$cache"
say "remount with the same cache: $(elapsed "$t0") s"
check_kind s "$work/synced" "remount with the same cache"
check_kind u "$work/closed" "remount with the same cache"
while IFS= read -r p; do
    cmp -s "$src/$p" "$mnt/rs/$p" || fail "rs/$p was in place before the kill but is not complete after the remount"
done <"$work/in-place"
n="$(check_rsynced "remount with the same cache")"
say "2: $nsynced fsync'd and $nclosed closed files complete, $n rsync'd files complete ($(wc -l <"$work/in-place") were in place at the kill), none partial"
t0="$(now)"
# --delete: the killed rsync's temp file (its unlink failed on the dead mount) goes too.
timeout 600 rsync -a --delete "$src/" "$mnt/rs/" || fail "rsync after the crash"
say "rsync after the crash: $(elapsed "$t0") s"
tree_compare "$src" "$mnt/rs" "after the crash and a second rsync"
umount_flushed "$mnt"

# 3. From the grid.
lib_mount "$mnt" "cache-dir=$work/cache2"
check_kind s "$work/synced" "fresh cache"
check_kind u "$work/closed" "fresh cache"
tree_compare "$src" "$mnt/rs" "fresh cache"
lib_umount "$mnt"
say "3: all of it read from the grid through a fresh cache"
say OK
