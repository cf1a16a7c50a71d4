#!/usr/bin/env bash
# benches/mount_reread.sh: what the storage servers send for sequential reads through the mount
# (a benchmark script, not a test: it prints numbers and asserts nothing about them).
#
#   CARGO_TARGET_DIR=... cargo build --release --all-features --bin lafs
#   LAFS=$CARGO_TARGET_DIR/release/lafs bash benches/mount_reread.sh
#
# One $SIZE_MIB MiB file of random bytes is written through the mount and synced to the grid,
# then read $READS times with `dd of=/dev/null bs=1M`, each time by a fresh mount (unmounted,
# remounted with a new cache directory, so every byte comes from the grid). For each read it
# prints the time, the bytes the servers wrote to their sockets during it (the sum of `wchar`
# in /proc/PID/io of the `lafs run` processes: share data plus protocol framing and hash trees)
# and that figure over the file size. A 2-of-N file read once costs a little more than its size;
# a range fetched twice shows as a ratio well above that. With RUST_LOG=lafs::fuse::backend=debug
# (passed to the daemon) the read-stream events of each read are counted from logs/mount.log.
#
# Knobs (environment): SIZE_MIB (1024), READS (6), NODES (3), K/HAPPY/N (2/3/4), MOUNT_OPTS,
# OUT (where to keep results, default a new directory under /tmp), LIB_KEEP=1.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
T="${T:-900}"
# shellcheck source=../mount-tests/lib.sh
source "$here/mount-tests/lib.sh"

SIZE_MIB="${SIZE_MIB:-1024}"
READS="${READS:-6}"
NODES="${NODES:-3}"
MOUNT_OPTS="${MOUNT_OPTS:-}"
OUT="${OUT:-$(mktemp -d /tmp/lafs-mount-reread-out.XXXXXX)}"
mkdir -p "$OUT"

lib_init mount-reread
lib_grid "$NODES" "${K:-2}" "${HAPPY:-3}" "${N:-4}"
servers=("${lib_pids[@]}")
mnt="$work/mnt"
log="$client/logs/mount.log"

# shellcheck source=support/mount_bench.sh
source "$here/benches/support/mount_bench.sh"
# count PATTERN FROM: lines of the daemon log after byte FROM that contain PATTERN.
count() { tail -c +"$(($2 + 1))" "$log" 2>/dev/null | grep -c -- "$1" || true; }

report "load average at the start" "$(cut -d' ' -f1-3 /proc/loadavg)"
big="$work/big"
timeout "$T" dd if=/dev/urandom of="$big" bs=1M count="$SIZE_MIB" status=none || fail "dd urandom"
lib_mount "$mnt" "$MOUNT_OPTS"
timeout "$T" dd if="$big" of="$mnt/big" bs=1M status=none || fail "dd into the mount"
timeout "$T" sync "$mnt/big" || fail "sync big"
lib_umount "$mnt"

for ((i = 1; i <= READS; i++)); do
    lib_mount "$mnt" "cache-dir=$work/cache-read$i${MOUNT_OPTS:+,$MOUNT_OPTS}"
    from="$(stat -c %s "$log" 2>/dev/null || echo 0)"
    s0="$(sent)"
    t0="$(now)"
    timeout "$T" dd if="$mnt/big" of=/dev/null bs=1M status=none || fail "dd out of the mount"
    r="$(elapsed "$t0")"
    s1="$(sent)"
    lib_umount "$mnt"
    rm -rf "$work/cache-read$i"
    mib=$(((s1 - s0) / 1048576))
    line="$r s, servers sent $mib MiB ($(python3 -c "print(f'{$mib / $SIZE_MIB:.3f}')") of the file)"
    line="$line, load $(cut -d' ' -f1 /proc/loadavg)"
    if grep -q "read stream opened" "$log" 2>/dev/null; then
        line="$line; streams opened $(count 'read stream opened' "$from")"
        line="$line (to the end $(count 'to_end=true' "$from"))"
        line="$line, reads behind a window $(count 'kept window' "$from")"
    fi
    report "read $i of $SIZE_MIB MiB, fresh cache" "$line"
done
say "results in $results"
