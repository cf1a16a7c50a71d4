#!/usr/bin/env bash
# benches/mount_perf.sh: wall-clock figures of `lafs mount` over a loopback grid (a benchmark
# script, not a test: it prints numbers and asserts nothing about them).
#
#   CARGO_TARGET_DIR=... cargo build --profile ci --bin lafs   # or --release
#   LAFS=$CARGO_TARGET_DIR/ci/lafs bash benches/mount_perf.sh
#
# What it measures (each step under `timeout`):
#   1. rsync -a of a generated tree of $FILES files (nested directories, symlinks, varied modes
#      and sizes) into the mount, then the no-op rerun, then `sync` of the tree's top directory
#      (waits until the grid has it: the time to reach the grid).
#   2. $SIZE_MIB MiB sequential write: `dd bs=1M` into the mount (local speed: the write-back
#      cache), then `sync FILE` (returns once the file is uploaded and published).
#   3. The same file read with a fresh cache (unmount, remount with a new cache directory):
#      `dd of=/dev/null bs=1M`, then checked against the source with cmp (not timed).
#   4. `lafs put` and `lafs get` of a file of the same size with other random content (so the put,
#      like the mount's upload, writes every share: a put of the mount's file would find its
#      shares in place and only encode), for the ratios; then, for reference, a put of the
#      mount's own file (shares already there).
#   5. Peak RSS (VmHWM) of each mount daemon, read just before its unmount.
#   6. What the storage servers sent during the big read (the sum of `wchar` in /proc/PID/io of
#      the `lafs run` processes: share data, hash trees, protocol framing), against the file size:
#      a range fetched twice shows as a ratio well above 1 (benches/mount_reread.sh repeats it).
#
# Knobs (environment): FILES (1000), DIRS (FILES/20), SIZE_MIB (1024), NODES (3), K/HAPPY/N (2/3/4: lib_grid's),
# MOUNT_OPTS (extra -o options), PERF=rsync or PERF=1 / PERF=write / PERF=read / PERF=all (record
# the daemon with `perf record -g` during the rsync / the big write's dd and sync / the big read's
# dd; the reports go to $OUT/perf-rsync.txt, $OUT/perf-write.txt, $OUT/perf-read.txt), OUT (where to keep results, default a new
# directory under /tmp), LIB_KEEP=1 (keep the work directory).
# WARM_GIB=N: before the big write, write N GiB of anonymous memory and free it. On a VM whose
# host backs guest memory lazily, the first touch of a guest page is slow: writing 1 GiB into
# the page cache measured 0.5 GB/s into pages never touched and 4.2 GB/s into pages freed just
# before. The mount writes every byte once more than `lafs put` does (its cache file), so on
# such a VM the write ratio depends on how much of the guest's memory was ever used; with
# WARM_GIB=8 (before the mount's write and again before `lafs put`) both sides write into
# touched pages, as on a machine that has run a while.
# The machine running it should be quiet: on a shared 2-core box the figures move by ±30%.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
T="${T:-900}"
# shellcheck source=../mount-tests/lib.sh
source "$here/mount-tests/lib.sh"

FILES="${FILES:-1000}"
# Directories in the tree (each mkdir costs an RSA-2048 key generation, as in Tahoe).
DIRS="${DIRS:-$((FILES / 20))}"
SIZE_MIB="${SIZE_MIB:-1024}"
NODES="${NODES:-3}"
MOUNT_OPTS="${MOUNT_OPTS:-}"
OUT="${OUT:-$(mktemp -d /tmp/lafs-mount-perf-out.XXXXXX)}"
mkdir -p "$OUT"

lib_init mount-perf
command -v rsync >/dev/null || lib_skip "no rsync"
lib_grid "$NODES" "${K:-2}" "${HAPPY:-3}" "${N:-4}"
servers=("${lib_pids[@]}")
mnt="$work/mnt"

# shellcheck source=support/mount_bench.sh
source "$here/benches/support/mount_bench.sh"
mibps() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.1f} MiB/s')" "$1" "$2"; }

# CPU time (user + system, in clock ticks) of process $1 so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
# The daemon serving $1 (`lafs -d CLIENT mount --foreground tahoe: MNT -o ...`): the newest, as
# the daemon of the previous mount of MNT may still be exiting after its unmount.
daemon_pid() {
    pgrep -n -f -- "mount --foreground tahoe: $1 " || true
}
peak_rss() {
    local pid
    pid="$(daemon_pid "$1")"
    [[ -n "$pid" ]] || { echo "?"; return; }
    awk '/^VmHWM/ {printf "%.1f MiB\n", $2 / 1024}' "/proc/$pid/status"
}

say "generating a tree of $FILES files"
src="$work/src"
python3 - "$src" "$FILES" "$DIRS" <<'PY'
import os, random, sys
root, n, ndirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
os.makedirs(root)
made = 0
dirs = [root]
# Nested: directories made at random places until there are `ndirs`.
while made < n:
    d = rnd.choice(dirs)
    if rnd.random() < 0.1 and len(dirs) < ndirs:
        nd = os.path.join(d, f"dir{len(dirs)}")
        os.mkdir(nd)
        os.chmod(nd, rnd.choice([0o755, 0o750, 0o700]))
        dirs.append(nd)
        continue
    p = os.path.join(d, f"file{made}.dat")
    if made % 20 == 19:
        os.symlink(f"../target{made}", p + ".lnk")
    else:
        size = rnd.choice([0, 10, 100, 1000, 4000, 20000, 100000])
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        os.chmod(p, rnd.choice([0o644, 0o600, 0o755, 0o444]))
    made += 1
# rsync -a compares mtimes: give every file a distinct one in the past.
for i, (dp, dn, fn) in enumerate(os.walk(root)):
    for f in fn:
        p = os.path.join(dp, f)
        if not os.path.islink(p):
            os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i))
PY
report "tree" "$FILES entries, $(du -sh "$src" | cut -f1), $(find "$src" -type d | wc -l) dirs"

lib_mount "$mnt" "$MOUNT_OPTS"
pid="$(daemon_pid "$mnt")"
say "mounted, daemon pid ${pid:-?}"

report "load average at the start" "$(cut -d' ' -f1-3 /proc/loadavg)"

# perf_start PHASE: records the daemon during PHASE when PERF asks for it; perf_stop PHASE.
perf_pid=""
perf_wanted() {
    case "${PERF:-}" in
        all) return 0 ;;
        1) [[ "$1" == rsync ]] ;;
        *) [[ "${PERF:-}" == "$1" ]] ;;
    esac
}
perf_start() {
    perf_pid=""
    if ! perf_wanted "$1" || [[ -z "$pid" ]] || ! command -v perf >/dev/null; then
        return 0
    fi
    perf record -g -o "$OUT/perf-$1.data" -p "$pid" >"$OUT/perf-$1.log" 2>&1 &
    perf_pid=$!
    sleep 1
}
perf_stop() {
    [[ -n "$perf_pid" ]] || return 0
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf report -i "$OUT/perf-$1.data" --no-children --percent-limit 1 --stdio \
        >"$OUT/perf-$1.txt" 2>/dev/null || true
    say "perf report in $OUT/perf-$1.txt"
    perf_pid=""
}

perf_start rsync
t0="$(now)"
timeout "$T" rsync -a "$src/" "$mnt/tree/" || fail "rsync"
report "rsync -a ($FILES files)" "$(elapsed "$t0") s"
perf_stop rsync
t0="$(now)"
timeout "$T" rsync -a "$src/" "$mnt/tree/" || fail "rsync rerun"
report "rsync -a rerun (no-op)" "$(elapsed "$t0") s"
t0="$(now)"
timeout "$T" rsync -a --itemize-changes --dry-run "$src/" "$mnt/tree/" >"$OUT/rsync-dry.txt" || fail "rsync -n"
report "rsync -n: entries still differing" "$(grep -vc '^\.d\.\.t\|^$' "$OUT/rsync-dry.txt" || true)"
t0="$(now)"
timeout "$T" sync -f "$mnt/tree" || fail "syncfs"
timeout "$T" find "$mnt/tree" -type d -exec sync {} + || fail "sync of the tree's directories"
report "sync of the tree (grid has it)" "$(elapsed "$t0") s"
report "peak RSS after the tree" "$(peak_rss "$mnt")"

# warm: see WARM_GIB above; done before the mount's write and again before `lafs put`.
warm() {
    ((${WARM_GIB:-0} > 0)) || return 0
    say "touching and freeing $WARM_GIB GiB of memory"
    python3 -c 'import sys; n = int(sys.argv[1]) << 30; b = bytearray(n); b[::4096] = b"\x01" * (n // 4096)' "$WARM_GIB" \
        || fail "WARM_GIB"
}
warm
say "writing a $SIZE_MIB MiB source file"
big="$work/big"
timeout "$T" dd if=/dev/urandom of="$big" bs=1M count="$SIZE_MIB" status=none || fail "dd urandom"
report "load average before the write" "$(cut -d' ' -f1-3 /proc/loadavg)"
perf_start write
t0="$(now)"
timeout "$T" dd if="$big" of="$mnt/big" bs=1M status=none || fail "dd into the mount"
w_local="$(elapsed "$t0")"
timeout "$T" sync "$mnt/big" || fail "sync big"
w_grid="$(elapsed "$t0")"
perf_stop write
report "write $SIZE_MIB MiB: dd returned" "$w_local s ($(mibps "$SIZE_MIB" "$w_local"))"
report "write $SIZE_MIB MiB: dd + sync (on the grid)" "$w_grid s ($(mibps "$SIZE_MIB" "$w_grid"))"
report "peak RSS after the write" "$(peak_rss "$mnt")"
lib_umount "$mnt"

lib_mount "$mnt" "cache-dir=$work/cache-fresh${MOUNT_OPTS:+,$MOUNT_OPTS}"
pid="$(daemon_pid "$mnt")"
perf_start read
s0="$(sent)"
c0="$(cpu_ticks "$pid")"
t0="$(now)"
timeout "$T" dd if="$mnt/big" of=/dev/null bs=1M status=none || fail "dd out of the mount"
r_mount="$(elapsed "$t0")"
c1="$(cpu_ticks "$pid")"
s1="$(sent)"
perf_stop read
report "read $SIZE_MIB MiB, fresh cache" "$r_mount s ($(mibps "$SIZE_MIB" "$r_mount"))"
report "read: daemon CPU" "$(python3 -c "print(f'{($c1 - $c0) / $(getconf CLK_TCK):.2f} s')")"
report "read: servers sent" "$(python3 -c "print(f'{($s1 - $s0) / 1048576:.0f} MiB ({($s1 - $s0) / 1048576 / $SIZE_MIB:.3f} of the file)')")"
report "peak RSS after the read" "$(peak_rss "$mnt")"
timeout "$T" cmp "$big" "$mnt/big" || fail "the file read back differs"
timeout "$T" diff -r --no-dereference "$src" "$mnt/tree" >/dev/null || fail "the tree read back differs"
report "peak RSS after cmp + diff -r" "$(peak_rss "$mnt")"
lib_umount "$mnt"

warm
big2="$work/big2"
timeout "$T" dd if=/dev/urandom of="$big2" bs=1M count="$SIZE_MIB" status=none || fail "dd urandom"
t0="$(now)"
cap="$(timeout "$T" "$LAFS" -d "$client" put "$big2")" || fail "lafs put"
put_s="$(elapsed "$t0")"
report "lafs put $SIZE_MIB MiB (new content)" "$put_s s ($(mibps "$SIZE_MIB" "$put_s"))"
t0="$(now)"
# Its CPU time (user + system) from bash's `times` around a subshell.
get_cpu="$( (timeout "$T" "$LAFS" -d "$client" get "$cap" >/dev/null || exit 1; times) | tail -n1)" \
    || fail "lafs get"
get_s="$(elapsed "$t0")"
report "lafs get $SIZE_MIB MiB" "$get_s s ($(mibps "$SIZE_MIB" "$get_s"))"
report "lafs get: CPU (children user, system)" "$get_cpu"
report "ratio write (put time / mount dd+sync)" "$(python3 -c "print(f'{$put_s / $w_grid:.2f}')")"
report "ratio read (get time / mount read)" "$(python3 -c "print(f'{$get_s / $r_mount:.2f}')")"
t0="$(now)"
timeout "$T" "$LAFS" -d "$client" put "$big" >/dev/null || fail "lafs put of the mount's file"
same_s="$(elapsed "$t0")"
report "lafs put of the mount's file (shares there)" "$same_s s ($(mibps "$SIZE_MIB" "$same_s"))"
report "ratio write against it" "$(python3 -c "print(f'{$same_s / $w_grid:.2f}')")"
say "results in $results"
