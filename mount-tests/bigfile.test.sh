#!/usr/bin/env bash
# mount-tests/bigfile.test.sh: a 256 MiB file copied into a mount and out again (cmp), then
# read back after unmount (which flushes its upload) and a remount with a fresh cache, i.e.
# from the grid. BIGFILE_MIB overrides the size. Times are printed (informational).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init bigfile
lib_grid 3
mib="${BIGFILE_MIB:-256}"

src="$work/big.src"
timeout 120 head -c "$((mib << 20))" /dev/urandom >"$src" || fail "making the source file"
mnt="$work/mnt"
lib_mount "$mnt"

t0="$(now)"
timeout 300 cp "$src" "$mnt/big.bin" || fail "cp into the mount"
say "cp in ($mib MiB): $(elapsed "$t0") s"
size="$(stat -c %s "$mnt/big.bin")"
[[ "$size" == "$((mib << 20))" ]] || fail "size in the mount is $size"
t0="$(now)"
timeout 300 cp "$mnt/big.bin" "$work/big.out" || fail "cp out of the mount"
say "cp out (cache): $(elapsed "$t0") s"
cmp "$src" "$work/big.out" || fail "the copy out of the mount differs from the source"
rm -f "$work/big.out"

t0="$(now)"
umount_flushed "$mnt"
say "unmount with the upload: $(elapsed "$t0") s"

lib_mount "$mnt" "cache-dir=$work/cache2"
size="$(stat -c %s "$mnt/big.bin")"
[[ "$size" == "$((mib << 20))" ]] || fail "size after remount is $size"
t0="$(now)"
timeout 300 cmp "$src" "$mnt/big.bin" || fail "the file read from the grid differs from the source"
say "read from the grid: $(elapsed "$t0") s"
# A second reader of the same file from an offset (segment cache and grid reads agree).
timeout 120 cmp <(tail -c +100000001 "$src") <(tail -c +100000001 "$mnt/big.bin") \
    || fail "a read from offset 100000000 differs"
lib_umount "$mnt"
say OK
