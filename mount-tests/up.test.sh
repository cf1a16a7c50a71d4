#!/usr/bin/env bash
# mount-tests/up.test.sh: `lafs up`, the embedded local grid, mounted.
#
# Starts `lafs up DIR` in the background, writes files through DIR/mnt, sees `lafs status`
# report them pending and then clean (write-back), writes more and unmounts with `lafs umount
# --flush`, checks with `lafs -d DIR/client get` that everything is on the grid (the grid keeps
# running after the unmount), stops `lafs up` with SIGINT, restarts it on the same DIR (same
# root cap, same shares; a fresh cache so reads come from the grid) and reads the files back,
# writes one more file and stops it with SIGINT at once: it must unmount, upload that file
# before the servers stop, and exit. A third run (fresh cache again) reads that file.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=mount-tests/lib.sh
source "$here/mount-tests/lib.sh"
lib_init up
dir="$work/up"
mnt="$dir/mnt"
client="$dir/client"
lib_mounts+=("$mnt")

# start_up N: `lafs up` with cache N, until it says it is ready; $up is its pid.
start_up() {
    "$LAFS" up "$dir" -o "cache-dir=$work/cache$1,write-back-delay=5" \
        >"$work/up$1.out" 2>"$work/up$1.err" &
    up=$!
    lib_pids+=("$up")
    timeout $T bash -c "until grep -qx 'lafs up: ready' '$work/up$1.out'; do
        kill -0 $up 2>/dev/null || exit 1; sleep 0.1; done" \
        || fail "lafs up ($1) did not come up: $(tail -5 "$work/up$1.err")"
    mountpoint -q "$mnt" || fail "lafs up ($1): $mnt is not mounted"
}

# stop_up: SIGINT, then it must exit (0) and leave nothing mounted.
stop_up() {
    kill -INT "$up"
    local rc=0
    timeout $T bash -c "while kill -0 $up 2>/dev/null; do sleep 0.1; done" || fail "lafs up still running"
    wait "$up" || rc=$?
    ((rc == 0)) || fail "lafs up exited with $rc: $(tail -5 "$work/up$1.err")"
    mountpoint -q "$mnt" && fail "still mounted after lafs up stopped"
    return 0
}

json() { timeout $T "$LAFS" status --json "$mnt" | python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

say "lafs up $dir"
start_up 1
root="$(sed -n 's/^tahoe: //p' "$client/private/aliases")"
[[ "$root" == URI:DIR2:* ]] || fail "no tahoe: alias in the client"
grep -qF "$root" "$work/up1.out" || fail "lafs up did not print the root cap"
ro="$(sed -n 's/^ *read-only (to share it): //p' "$work/up1.out")"
[[ "$ro" == URI:DIR2-RO:* ]] || fail "lafs up printed no read cap of the root"
[[ -d "$dir/storage0" && -d "$dir/storage2" && ! -e "$dir/storage3" ]] || fail "not 3 storage servers"

head -c 400000 /dev/urandom >"$work/big.src"
echo "small file" >"$work/small.src"
timeout $T cp "$work/big.src" "$mnt/big.bin" || fail "write big.bin"
timeout $T mkdir "$mnt/docs" || fail "mkdir docs"
timeout $T cp "$work/small.src" "$mnt/docs/small.txt" || fail "write docs/small.txt"
[[ "$(json clean)" == "False" ]] || fail "status: not pending after writes"
timeout $T "$LAFS" status "$mnt" | grep -q "^state: pending" || fail "human status: not pending"
say "waiting for the write-back to make the mount clean"
deadline=$((SECONDS + T))
until [[ "$(json clean)" == "True" ]]; do
    ((SECONDS < deadline)) || fail "the mount never became clean: $(timeout 10 "$LAFS" status "$mnt")"
    sleep 0.3
done
timeout $T "$LAFS" status "$mnt" | grep -q "^state: clean" || fail "human status: not clean"
# The printed read cap reads the same tree and cannot change it.
timeout $T "$LAFS" -d "$client" ls "$ro/docs" | grep -qx small.txt || fail "ls of the read cap"
timeout $T "$LAFS" -d "$client" get "$ro/big.bin" "$work/got" || fail "get through the read cap"
cmp "$work/big.src" "$work/got" || fail "big.bin through the read cap differs"
if timeout $T "$LAFS" -d "$client" mkdir "$ro/nope" 2>/dev/null; then fail "mkdir through the read cap"; fi

echo "flushed at umount" >"$work/late.src"
timeout $T cp "$work/late.src" "$mnt/docs/late.txt" || fail "write docs/late.txt"
[[ "$(json clean)" == "False" ]] || fail "status: late.txt not pending"
say "lafs umount --flush"
timeout $T "$LAFS" umount --flush "$mnt" || fail "lafs umount --flush"
mountpoint -q "$mnt" && fail "still mounted after lafs umount --flush"
kill -0 "$up" || fail "lafs up exited at the unmount (the grid should keep running)"
for f in big.bin:big.src docs/small.txt:small.src docs/late.txt:late.src; do
    timeout $T "$LAFS" -d "$client" get "tahoe:${f%%:*}" "$work/got" || fail "lafs get ${f%%:*}"
    cmp "$work/${f##*:}" "$work/got" || fail "${f%%:*} on the grid differs"
done
stop_up 1

say "restarting lafs up on the same directory"
start_up 2
grep -qF "$root" "$work/up2.out" || fail "the restart has another root cap"
timeout $T cmp "$work/big.src" "$mnt/big.bin" || fail "big.bin after restart"
timeout $T cmp "$work/late.src" "$mnt/docs/late.txt" || fail "docs/late.txt after restart"
echo "written just before Ctrl-C" >"$work/last.src"
timeout $T cp "$work/last.src" "$mnt/last.txt" || fail "write last.txt"
say "SIGINT with last.txt pending"
stop_up 2

say "a third run reads last.txt from the grid"
start_up 3
timeout $T cmp "$work/last.src" "$mnt/last.txt" || fail "last.txt was not uploaded at SIGINT"
timeout $T "$LAFS" -d "$client" get tahoe:last.txt "$work/got" || fail "lafs get last.txt"
cmp "$work/last.src" "$work/got" || fail "last.txt on the grid differs"
stop_up 3
say "OK"
