#!/usr/bin/env bash
# mount-tests/tar.test.sh: `tar x` into a mount and rename over an existing file.
#
# An archive made locally from a generated tree (trees.sh: nested dirs, symlinks, modes,
# mtimes) is extracted into the mount with `tar xpf` and compared with the source (diff -r and
# modes/owners/mtimes/targets/hashes); `tar c` of the mounted tree must list the same members.
# Then `mv a b` with b existing (files, in one directory and across directories, a directory
# over an empty directory, a symlink over a file): b has a's content and mode, a is gone, and
# the result survives an unmount and a remount with a fresh cache (from the grid).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init tar
lib_grid 3

src="$work/src"
tree_gen "$src" 300 11 || fail "generating the source tree"
timeout 120 tar -C "$work" --format=posix -cf "$work/src.tar" src || fail "tar c of the source"
mnt="$work/mnt"
lib_mount "$mnt"

t0="$(now)"
timeout 300 tar -C "$mnt" -xpf "$work/src.tar" || fail "tar x into the mount"
say "tar x (300 files): $(elapsed "$t0") s"
tree_compare "$src" "$mnt/src" "after tar x"
timeout 120 tar -C "$mnt" -cf - src | tar -tvf - | sort >"$work/list.mnt" || fail "tar c in the mount"
tar -tvf "$work/src.tar" | sort >"$work/list.src"
d="$(diff "$work/list.src" "$work/list.mnt")" || fail "tar -tv listings differ (< archive, > mount):
$(head -n 20 <<<"$d")"

# mv over existing targets.
r="$mnt/ren"
mkdir -p "$r/x" "$r/y" "$r/emptydir" "$r/fulldir"
printf 'content of a\n' >"$r/a"
chmod 0640 "$r/a"
printf 'old content of b, longer than a\n' >"$r/b"
chmod 0600 "$r/b"
printf 'x/c\n' >"$r/x/c"
printf 'y/c old\n' >"$r/y/c"
head -c 150000 /dev/urandom >"$work/big"
cp "$work/big" "$r/x/big"
printf 'small\n' >"$r/y/big"
printf 'in fulldir\n' >"$r/fulldir/f"
ln -s a "$r/lnk"
printf 'regular\n' >"$r/reg"

timeout 60 mv "$r/a" "$r/b" || fail "mv a b (b exists)"
timeout 60 mv "$r/x/c" "$r/y/c" || fail "mv x/c y/c (y/c exists)"
timeout 60 mv -T "$r/x/big" "$r/y/big" || fail "mv x/big y/big (y/big exists)"
timeout 60 mv -T "$r/fulldir" "$r/emptydir" || fail "mv fulldir emptydir (an empty directory)"
timeout 60 mv -T "$r/lnk" "$r/reg" || fail "mv lnk reg (a symlink over a file)"

check_renames() {
    local what="$1" names
    names="$(cd "$r" && find . | sort | tr '\n' ' ')"
    [[ "$names" == ". ./b ./emptydir ./emptydir/f ./reg ./x ./y ./y/big ./y/c " ]] \
        || fail "$what: names after the renames: $names"
    [[ "$(cat "$r/b")" == "content of a" ]] || fail "$what: b does not have a's content"
    [[ "$(stat -c %a "$r/b")" == 640 ]] || fail "$what: b's mode is $(stat -c %a "$r/b"), not a's 640"
    [[ "$(cat "$r/y/c")" == "x/c" ]] || fail "$what: y/c does not have x/c's content"
    cmp "$work/big" "$r/y/big" || fail "$what: y/big does not have x/big's content"
    [[ "$(cat "$r/emptydir/f")" == "in fulldir" ]] || fail "$what: emptydir/f"
    [[ -L "$r/reg" && "$(readlink "$r/reg")" == a ]] || fail "$what: reg is not the symlink to a"
}
check_renames "in the mount"
# A non-empty directory cannot be renamed over.
mkdir "$r/d1" "$r/d2"
touch "$r/d2/keep"
if timeout 60 mv -T "$r/d1" "$r/d2" 2>/dev/null; then fail "mv over a non-empty directory succeeded"; fi
[[ -e "$r/d2/keep" && -d "$r/d1" ]] || fail "a failed mv over a non-empty directory changed something"
rm -r "$r/d1" "$r/d2"

umount_flushed "$mnt"
lib_mount "$mnt" "cache-dir=$work/cache2"
tree_compare "$src" "$mnt/src" "tar x, through a mount with a fresh cache"
check_renames "through a mount with a fresh cache"
lib_umount "$mnt"
say OK
