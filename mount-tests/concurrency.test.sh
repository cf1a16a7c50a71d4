#!/usr/bin/env bash
# mount-tests/concurrency.test.sh: concurrent readers and writers on one mount.
#
# At the same time: 8 writers each write its own file (in 64 KiB chunks, several MiB, with a
# close and reopen-append half way), 4 readers read one shared 4 MiB file again and again and
# compare it each time, and 6 appenders append numbered lines to their own files in ONE shared
# directory (each line its own open/append/close) while 2 more create and remove small files
# there. Then every content is checked, again after unmount and a remount with a fresh cache.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init concurrency
lib_grid 3
mnt="$work/mnt"
lib_mount "$mnt"

mkdir -p "$work/expect" "$mnt/w" "$mnt/shared"
head -c $((4 << 20)) /dev/urandom >"$work/shared.src"
timeout 120 cp "$work/shared.src" "$mnt/shared.bin" || fail "writing the shared file"
for i in $(seq 0 7); do
    head -c $(((3 + i % 3) << 20)) /dev/urandom >"$work/expect/w$i"
done

writer() { # i: its own file, first half, close, then append the rest
    local i="$1" f="$work/expect/w$1" size half
    size="$(stat -c %s "$f")"
    half=$((size / 2))
    head -c "$half" "$f" | dd of="$mnt/w/w$i" bs=64k iflag=fullblock status=none || return 1
    tail -c +$((half + 1)) "$f" | dd of="$mnt/w/w$i" bs=64k iflag=fullblock oflag=append \
        conv=notrunc status=none || return 1
}
reader() { # reads the shared file 6 times
    local n
    for n in 1 2 3 4 5 6; do
        cmp "$work/shared.src" "$mnt/shared.bin" || { echo "reader $1: read $n differs" >&2; return 1; }
    done
}
appender() { # 200 lines, each its own open/append/close
    local i="$1" n
    for n in $(seq 1 200); do
        printf 'appender %d line %d\n' "$i" "$n" >>"$mnt/shared/log$i" || return 1
    done
}
churner() { # creates and removes small files in the shared directory
    local i="$1" n
    for n in $(seq 1 60); do
        printf '%d %d\n' "$i" "$n" >"$mnt/shared/tmp$i-$n" || return 1
        if ((n % 2 == 0)); then rm "$mnt/shared/tmp$i-$((n - 1))" || return 1; fi
    done
}

t0="$(now)"
pids=()
names=()
for i in $(seq 0 7); do writer "$i" & pids+=($!); names+=("writer $i"); done
for i in $(seq 0 3); do reader "$i" & pids+=($!); names+=("reader $i"); done
for i in $(seq 0 5); do appender "$i" & pids+=($!); names+=("appender $i"); done
for i in 0 1; do churner "$i" & pids+=($!); names+=("churner $i"); done
# Bounded: a watchdog kills the workers (our own children, by pid) if they hang.
(sleep 300; kill "${pids[@]}" 2>/dev/null) &
watchdog=$!
bad=()
for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || bad+=("${names[$k]}")
done
kill "$watchdog" 2>/dev/null || true
wait "$watchdog" 2>/dev/null || true
((${#bad[@]} == 0)) || fail "workers failed or hung (300 s): ${bad[*]}"
say "concurrent phase: $(elapsed "$t0") s"

check_all() {
    local what="$1" i n names want
    for i in $(seq 0 7); do
        cmp "$work/expect/w$i" "$mnt/w/w$i" || fail "$what: writer $i's file differs"
    done
    cmp "$work/shared.src" "$mnt/shared.bin" || fail "$what: the shared file differs"
    for i in $(seq 0 5); do
        for n in $(seq 1 200); do printf 'appender %d line %d\n' "$i" "$n"; done >"$work/expect/log$i"
        cmp "$work/expect/log$i" "$mnt/shared/log$i" || fail "$what: appender $i's file differs"
    done
    names="$(ls "$mnt/shared" | sort | tr '\n' ' ')"
    want="$( (for i in $(seq 0 5); do echo "log$i"; done
        for i in 0 1; do for n in $(seq 2 2 60); do echo "tmp$i-$n"; done; done) | sort | tr '\n' ' ')"
    [[ "$names" == "$want" ]] || fail "$what: the shared directory lists '$names'"
    for i in 0 1; do for n in $(seq 2 2 60); do
        [[ "$(cat "$mnt/shared/tmp$i-$n")" == "$i $n" ]] || fail "$what: tmp$i-$n"
    done; done
}
check_all "after the concurrent phase"

umount_flushed "$mnt"
lib_mount "$mnt" "cache-dir=$work/cache2"
check_all "through a mount with a fresh cache"
lib_umount "$mnt"
say OK
