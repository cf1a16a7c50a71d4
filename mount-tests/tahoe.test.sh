#!/usr/bin/env bash
# mount-tests/tahoe.test.sh: a mount and a real Tahoe-LAFS 1.20 client on the same grid.
#
# A Tahoe client node (`tahoe create-client`, the lafs client's servers.yaml and encoding, an
# alias `tahoe:` for the mount's root) runs next to a mount with dir-refresh=2 (default
# write-back delay). Checks:
# - what the mount wrote and closed (NO fsync, NO unmount) is listed by `tahoe ls` and read by
#   `tahoe get` within 30 s of the close (a LIT file, a 200 KiB CHK file, a file in a new
#   subdirectory, a symlink whose content is its target, an overwritten file, a rename);
# - what `tahoe put`/`tahoe mkdir`/`tahoe mv`/`tahoe unlink` did in the mounted directory shows
#   through the mount within dir-refresh (2 s) plus the kernel's 1 s attribute time-out, plus a
#   margin (we poll up to 15 s and print how long it took);
# - a fifo made in the mount is listed by `tahoe ls` and read by `tahoe get` as an empty file;
# - a tree stored by real `tahoe backup` (Archives/Latest: immutable directories) mounts
#   read-only with its modes, owners, mtimes and contents.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
source "$here/mount-tests/trees.sh"
lib_init tahoe
venv="${LAFS_TAHOE_VENV:-$HOME/.cache/lafs/tahoe-venv}"
tahoe_bin="$venv/bin/tahoe"
[[ -x "$tahoe_bin" ]] || lib_skip "no tahoe at $tahoe_bin (bash .ci/setup)"
command -v curl >/dev/null || lib_skip "no curl"
lib_grid 3
mnt="$work/mnt"
lib_mount "$mnt" "dir-refresh=2"

# The Tahoe client.
tc="$work/tahoe-client"
wport="$(lib_free_port)"
timeout 120 "$tahoe_bin" create-client "--webport=tcp:$wport:interface=127.0.0.1" \
    --nickname=tahoe-client --shares-needed=2 --shares-happy=3 --shares-total=4 "$tc" >/dev/null \
    || fail "tahoe create-client"
cp "$client/private/servers.yaml" "$tc/private/servers.yaml"
echo "tahoe: $root" >"$tc/private/aliases"
"$tahoe_bin" run --allow-stdin-close "$tc" </dev/null >"$work/tahoe-run.log" 2>&1 &
lib_pids+=($!)
web="http://127.0.0.1:$wport"
connected() {
    curl -sf --max-time 5 "$web/?t=json" | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(sum(1 for s in v.get("servers", []) if str(s.get("connection_status", "")).lower().startswith("connected")))
' 2>/dev/null || echo 0
}
t0="$(now)"
timeout 120 bash -c "until curl -sf --max-time 5 '$web/' >/dev/null; do sleep 0.5; done" \
    || fail "the tahoe client's web port did not come up: $(tail -n 20 "$work/tahoe-run.log")"
timeout 120 bash -c "$(declare -f connected); web='$web'; until (( \$(connected) >= 3 )); do sleep 0.5; done" \
    || fail "the tahoe client did not connect to the 3 lafs servers: $(tail -n 20 "$work/tahoe-run.log")"
say "tahoe client up and connected: $(elapsed "$t0") s"
T_() { timeout 120 "$tahoe_bin" -d "$tc" "$@"; }

# ls_json PATH: the directory's children names (web API, cheap to poll), one a line.
ls_names() {
    curl -sf --max-time 10 "$web/uri/$root/$1?t=json" | python3 -c '
import json, sys
print("\n".join(sorted(json.load(sys.stdin)[1]["children"])))'
}
# wait_grid WHAT CMD...: polls CMD (cheap) until it succeeds, at most 30 s; prints the delay.
wait_grid() {
    local what="$1" start="$closed_at" deadline=$((SECONDS + 30))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || fail "$what: not on the grid 30 s after the close"
        sleep 0.5
    done
    say "$what: on the grid $(elapsed "$start") s after the close"
}
has_name() { ls_names "$1" 2>/dev/null | grep -qxF -- "$2"; }
web_equals() { cmp -s <(curl -sf --max-time 30 "$web/uri/$root/$1") "$2"; }

# 1. Mount -> Tahoe.
printf 'small, a LIT file\n' >"$work/lit.src"
head -c 200000 /dev/urandom >"$work/chk.src"
printf 'in a new subdirectory\n' >"$work/sub.src"
cp "$work/lit.src" "$mnt/lit.txt"
cp "$work/chk.src" "$mnt/chk.bin"
mkdir "$mnt/sub"
cp "$work/sub.src" "$mnt/sub/inner.txt"
ln -s some/target/path "$mnt/lnk"
closed_at="$(now)"
wait_grid "lit.txt" web_equals lit.txt "$work/lit.src"
wait_grid "chk.bin" web_equals chk.bin "$work/chk.src"
wait_grid "sub/inner.txt" web_equals sub/inner.txt "$work/sub.src"
wait_grid "lnk" has_name "" lnk
names="$(T_ ls tahoe: | tr '\n' ' ')" || fail "tahoe ls"
[[ "$names" == "chk.bin lit.txt lnk sub " ]] || fail "tahoe ls lists '$names'"
[[ "$(T_ ls tahoe:sub)" == "inner.txt" ]] || fail "tahoe ls tahoe:sub: $(T_ ls tahoe:sub)"
T_ get tahoe:chk.bin "$work/chk.get" || fail "tahoe get chk.bin"
cmp "$work/chk.src" "$work/chk.get" || fail "tahoe get chk.bin differs"
[[ "$(T_ get tahoe:lit.txt)" == "small, a LIT file" ]] || fail "tahoe get lit.txt"
[[ "$(T_ get tahoe:sub/inner.txt)" == "in a new subdirectory" ]] || fail "tahoe get sub/inner.txt"
[[ "$(T_ get tahoe:lnk)" == "some/target/path" ]] || fail "tahoe get lnk: not the symlink's target"
md="$(curl -sf "$web/uri/$root/?t=json")" || fail "directory JSON"
python3 - "$md" <<'PY' || fail "metadata of the mount's entries as Tahoe sees them"
import json, sys
kids = json.loads(sys.argv[1])[1]["children"]
md = kids["chk.bin"][1]["metadata"]
assert md.get("st_mode", 0) & 0o170000 == 0o100000, md
assert isinstance(md.get("mtime"), (int, float)), md
assert kids["sub"][0] == "dirnode", kids["sub"][0]
PY

# Overwrite and rename through the mount.
printf 'overwritten through the mount\n' >"$work/lit2.src"
cp "$work/lit2.src" "$mnt/lit.txt"
mv "$mnt/chk.bin" "$mnt/chk-renamed.bin"
closed_at="$(now)"
wait_grid "overwritten lit.txt" web_equals lit.txt "$work/lit2.src"
wait_grid "renamed chk.bin" has_name "" chk-renamed.bin
has_name "" chk.bin && fail "chk.bin still listed after the rename"
T_ get tahoe:chk-renamed.bin "$work/chk.get2" || fail "tahoe get chk-renamed.bin"
cmp "$work/chk.src" "$work/chk.get2" || fail "tahoe get chk-renamed.bin differs"

# 2. Tahoe -> mount.
# wait_mount WHAT CMD...: polls CMD until it succeeds, at most 15 s; prints the delay.
wait_mount() {
    local what="$1" start deadline=$((SECONDS + 15))
    start="$(now)"
    shift
    until "$@"; do
        ((SECONDS < deadline)) || fail "$what: not visible through the mount 15 s after tahoe's change (dir-refresh=2)"
        sleep 0.2
    done
    say "$what: visible through the mount $(elapsed "$start") s after tahoe's change"
}
head -c 150000 /dev/urandom >"$work/put.src"
printf 'put into a new tahoe directory\n' >"$work/put2.src"
T_ put "$work/put.src" tahoe:from-tahoe.bin >/dev/null || fail "tahoe put"
wait_mount "tahoe put from-tahoe.bin" cmp -s "$work/put.src" "$mnt/from-tahoe.bin"
T_ mkdir tahoe:tdir >/dev/null || fail "tahoe mkdir"
T_ put "$work/put2.src" tahoe:tdir/inner >/dev/null || fail "tahoe put tdir/inner"
wait_mount "tahoe mkdir tdir + put tdir/inner" cmp -s "$work/put2.src" "$mnt/tdir/inner"
T_ put "$work/put2.src" tahoe:sub/from-tahoe >/dev/null || fail "tahoe put sub/from-tahoe"
wait_mount "tahoe put into the mount's subdirectory" cmp -s "$work/put2.src" "$mnt/sub/from-tahoe"
T_ mv tahoe:lit.txt tahoe:lit-moved.txt >/dev/null || fail "tahoe mv"
gone_lit() { [[ ! -e "$mnt/lit.txt" ]] && cmp -s "$work/lit2.src" "$mnt/lit-moved.txt"; }
wait_mount "tahoe mv lit.txt lit-moved.txt" gone_lit
T_ unlink tahoe:from-tahoe.bin >/dev/null || fail "tahoe unlink"
gone_put() { [[ ! -e "$mnt/from-tahoe.bin" ]]; }
wait_mount "tahoe unlink from-tahoe.bin" gone_put
st="$(stat -c %F "$mnt/tdir/inner")"
[[ "$st" == "regular file" ]] || fail "a tahoe-put file shows as '$st'"
names="$(ls "$mnt" | tr '\n' ' ')"
[[ "$names" == "chk-renamed.bin lit-moved.txt lnk sub tdir " ]] || fail "the mount lists '$names'"
[[ "$(readlink "$mnt/lnk")" == some/target/path ]] || fail "the symlink changed"

# 3. Special files as Tahoe sees them: a fifo made in the mount is a small (empty) file.
mkfifo -m 0640 "$mnt/pipe"
closed_at="$(now)"
wait_grid "fifo" has_name "" pipe
[[ "$(T_ get tahoe:pipe | wc -c)" == 0 ]] || fail "tahoe get of a fifo entry is not empty"
[[ "$(stat -c %F "$mnt/pipe")" == fifo ]] || fail "the fifo is no longer a fifo in the mount"
lib_umount "$mnt"

# 4. A tree stored by real `tahoe backup` mounts (read-only: Latest is an immutable directory)
# with its modes and times: files of LIT and CHK sizes, modes 0644/0755/0600/0444/0640,
# directories 0750/0700, mtimes in the past with fractions of seconds.
bsrc="$work/backup-src"
python3 - "$bsrc" <<'PY'
import os, sys
root = sys.argv[1]
os.makedirs(os.path.join(root, "docs", "deep"))
files = {"a.txt": 0o644, "run.sh": 0o755, "secret": 0o600, "docs/readonly.txt": 0o444,
         "docs/deep/x.bin": 0o640}
for i, (p, mode) in enumerate(sorted(files.items())):
    path = os.path.join(root, p)
    with open(path, "wb") as f:
        f.write(os.urandom(20 + 40000 * i))
    os.chmod(path, mode)
    t = 1_600_000_000_123_456_789 + i * 86_400_000_000_007
    os.utime(path, ns=(t, t))
for i, (d, mode) in enumerate((("docs/deep", 0o700), ("docs", 0o750))):
    path = os.path.join(root, d)
    os.chmod(path, mode)
    t = 1_500_000_000_987_654_321 + i * 1_000_000_000_003
    os.utime(path, ns=(t, t))
PY
T_ backup "$bsrc" tahoe:backups >"$work/backup.out" 2>&1 || fail "tahoe backup: $(cat "$work/backup.out")"
bmnt="$work/bmnt"
mkdir -p "$bmnt"
lib_mounts+=("$bmnt")
timeout $T "$LAFS" -d "$client" mount tahoe:backups/Latest "$bmnt" -o "cache-dir=$work/bcache" \
    || fail "mount of tahoe:backups/Latest"
python3 - "$bsrc" "$bmnt" <<'PY' || fail "the tahoe backup tree through the mount"
import os, stat, sys
src, mnt = sys.argv[1], sys.argv[2]
checked = 0
for dirpath, dirs, files in os.walk(src):
    for name in dirs + files:
        s = os.lstat(os.path.join(dirpath, name))
        rel = os.path.relpath(os.path.join(dirpath, name), src)
        m = os.lstat(os.path.join(mnt, rel))
        assert stat.S_IFMT(m.st_mode) == stat.S_IFMT(s.st_mode), (rel, oct(m.st_mode))
        assert stat.S_IMODE(m.st_mode) == stat.S_IMODE(s.st_mode), (rel, oct(m.st_mode), oct(s.st_mode))
        # Tahoe stores st_mtime as a float: equal to well under a microsecond.
        assert abs(m.st_mtime_ns - s.st_mtime_ns) < 1000, (rel, m.st_mtime_ns, s.st_mtime_ns)
        assert (m.st_uid, m.st_gid) == (s.st_uid, s.st_gid), rel
        if stat.S_ISREG(s.st_mode):
            with open(os.path.join(dirpath, name), "rb") as a, open(os.path.join(mnt, rel), "rb") as b:
                assert a.read() == b.read(), rel
        checked += 1
assert checked == 7, checked
try:
    open(os.path.join(mnt, "new"), "w")
except OSError as e:
    assert e.errno == 30, e  # EROFS
else:
    raise AssertionError("created a file in an immutable directory")
print("checked", checked, "entries")
PY
lib_umount "$bmnt"
say "tahoe backup tree mounted with its modes, owners, times and contents"
say OK
