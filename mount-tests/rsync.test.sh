#!/usr/bin/env bash
# mount-tests/rsync.test.sh: `rsync -a` of a 1,000-file tree into a mount.
#
# The tree (trees.sh: nested dirs, empty/LIT/100 KiB+ files, relative/absolute/dangling
# symlinks, modes 0600..0755, dirs 0700, mtimes in the past with nanoseconds) is copied with
# `rsync -a`, then compared (diff -r, and modes/owners/mtimes/symlink targets/hashes). A second
# `rsync -a --itemize-changes` and a `--checksum` one must change nothing. One source file is
# then modified: the next rsync (temp file + rename over the existing file) must touch only it.
# Finally the mount is unmounted (flushing everything) and the tree compared again through a
# mount with a fresh cache, i.e. from the grid. The rsync times are printed (informational).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init rsync
command -v rsync >/dev/null || lib_skip "no rsync"
lib_grid 3

src="$work/src"
tree_gen "$src" 1000 7 || fail "generating the source tree"
say "source: $(find "$src" -type f | wc -l) files, $(find "$src" -type l | wc -l) symlinks, $(find "$src" -type d | wc -l) dirs, $(du -sh "$src" | cut -f1)"

mnt="$work/mnt"
lib_mount "$mnt"
dst="$mnt/tree"

t0="$(now)"
timeout 600 rsync -a "$src/" "$dst/" || fail "first rsync -a into the mount"
say "first rsync -a: $(elapsed "$t0") s"
tree_compare "$src" "$dst" "after the first rsync"

t0="$(now)"
out="$(timeout 300 rsync -a --itemize-changes "$src/" "$dst/")" || fail "second rsync -a"
say "second rsync -a (nothing to do): $(elapsed "$t0") s"
[[ -z "$out" ]] || fail "second rsync -a --itemize-changes changed things:
$(head -n 20 <<<"$out")"

t0="$(now)"
out="$(timeout 600 rsync -a --checksum --itemize-changes "$src/" "$dst/")" \
    || fail "rsync -a --checksum"
say "rsync -a --checksum (nothing to do): $(elapsed "$t0") s"
[[ -z "$out" ]] || fail "rsync -a --checksum --itemize-changes changed things:
$(head -n 20 <<<"$out")"

# rsync's temp file + rename over an existing file: only that file changes.
victim="$(cd "$src" && find . -type f -size +1k | sort | sed -n 10p)"
victim="${victim#./}"
[[ -n "$victim" ]] || fail "no file to modify"
printf 'appended by rsync.test\n' >>"$src/$victim"
touch -d '2015-06-01 12:00:00.123456789' "$src/$victim"
out="$(timeout 300 rsync -a --itemize-changes "$src/" "$dst/")" || fail "rsync after the change"
lines="$(grep -c . <<<"$out" || true)"
[[ "$lines" == 1 && "$out" == ">f"*" $victim" ]] \
    || fail "rsync after modifying '$victim' should transfer only it, printed:
$(head -n 20 <<<"$out")"
left="$(find "$dst" -name '.*' | head -n 5)"
[[ -z "$left" ]] || fail "rsync temp files left in the mount: $left"
tree_compare "$src" "$dst" "after the update of one file"
out="$(timeout 300 rsync -a --itemize-changes "$src/" "$dst/")" || fail "rsync after the update"
[[ -z "$out" ]] || fail "rsync after the update changed things again:
$(head -n 20 <<<"$out")"

t0="$(now)"
umount_flushed "$mnt"
say "unmount (flushes every pending upload): $(elapsed "$t0") s"

lib_mount "$mnt" "cache-dir=$work/cache2"
t0="$(now)"
tree_compare "$src" "$dst" "through a mount with a fresh cache (from the grid)"
say "compare from the grid: $(elapsed "$t0") s"
out="$(timeout 600 rsync -a --itemize-changes "$src/" "$dst/")" || fail "rsync on the fresh mount"
[[ -z "$out" ]] || fail "rsync on a fresh mount wants changes:
$(head -n 20 <<<"$out")"
lib_umount "$mnt"
say OK
