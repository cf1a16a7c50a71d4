#!/usr/bin/env bash
# mount-tests/git.test.sh: a git repository inside a mount. `git init`, two commits (files in
# subdirectories, an executable, a symlink, a rename, a deletion), `git log`, `git status`
# clean, `git fsck --full`, `git gc` (packs, renames over existing files), then the same checks
# after unmount and a remount with a fresh cache (from the grid), and a `git clone` out of it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init git
command -v git >/dev/null || lib_skip "no git"
lib_grid 3
mnt="$work/mnt"
lib_mount "$mnt"

export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.org GIT_COMMITTER_NAME=t \
    GIT_COMMITTER_EMAIL=t@example.org GIT_CONFIG_NOSYSTEM=1 HOME="$work"
git config --global init.defaultBranch main
git config --global --add safe.directory '*'
repo="$mnt/repo"
G() { timeout 120 git -C "$repo" "$@"; }

t0="$(now)"
timeout 60 git init -q "$repo" || fail "git init"
mkdir -p "$repo/src/lib" "$repo/docs"
for i in $(seq 1 20); do
    printf 'file %d\n%s\n' "$i" "$(head -c 3000 /dev/urandom | base64)" >"$repo/src/lib/m$i.txt"
done
printf '#!/bin/sh\necho hi\n' >"$repo/run.sh"
chmod 0755 "$repo/run.sh"
echo "readme" >"$repo/docs/README"
ln -s docs/README "$repo/README"
head -c 200000 /dev/urandom >"$repo/blob.bin"
G add -A || fail "git add"
G commit -q -m "first" || fail "git commit (first)"
G mv src/lib/m1.txt src/m1-moved.txt || fail "git mv"
G rm -q src/lib/m2.txt || fail "git rm"
echo "changed" >>"$repo/docs/README"
G commit -q -a -m "second" || fail "git commit (second)"
say "init + 2 commits: $(elapsed "$t0") s"

check_repo() {
    local what="$1" log st
    log="$(G log --format=%s)" || fail "$what: git log"
    [[ "$log" == $'second\nfirst' ]] || fail "$what: git log shows '$log'"
    st="$(G status --porcelain)" || fail "$what: git status"
    [[ -z "$st" ]] || fail "$what: git status not clean: $(head -n 10 <<<"$st")"
    G fsck --full --strict --no-progress || fail "$what: git fsck"
    [[ "$(G show HEAD:docs/README)" == $'readme\nchanged' ]] || fail "$what: git show HEAD:docs/README"
    [[ "$(readlink "$repo/README")" == docs/README ]] || fail "$what: symlink README"
    [[ -x "$repo/run.sh" ]] || fail "$what: run.sh lost its x bit"
    [[ "$(G ls-files -s run.sh | cut -c1-6)" == 100755 ]] || fail "$what: run.sh not 100755 in the index"
}
check_repo "after two commits"

t0="$(now)"
G gc -q --aggressive || fail "git gc"
say "git gc: $(elapsed "$t0") s"
check_repo "after git gc"

umount_flushed "$mnt"
lib_mount "$mnt" "cache-dir=$work/cache2"
t0="$(now)"
check_repo "after a remount with a fresh cache"
say "checks from the grid: $(elapsed "$t0") s"
timeout 120 git clone -q "$repo" "$work/clone" || fail "git clone out of the mount"
diff -r --exclude=.git "$repo" "$work/clone" || fail "the clone differs from the work tree"
# A commit on the fresh mount, then fsck again.
echo "third" >"$repo/third.txt"
G add third.txt && G commit -q -m third || fail "git commit on the fresh mount"
G fsck --full --strict --no-progress || fail "git fsck after the third commit"
lib_umount "$mnt"
say OK
