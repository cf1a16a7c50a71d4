#!/usr/bin/env bash
# mount-tests/ops.test.sh: the adapter's less common requests on a real mount.
#
# - readdirplus: `ls -l` of a 1,000-entry directory shows every entry with its size and mode,
#   twice (the second listing comes after the kernel dropped its dentries and inodes, so the
#   forgets of the first one balanced its lookups or inodes would be missing or stale); an
#   `rsync -a` rerun over an unchanged tree transfers and changes nothing.
# - fallocate: `fallocate -l` and python's os.posix_fallocate extend a file with zeros past its
#   end, leave it alone inside it and with --keep-size; punch-hole and zero-range fail with
#   EOPNOTSUPP; the extended size reaches the grid.
# - access (a mount without default_permissions): root may read a mode-0000 file but not
#   execute a mode-0644 one; another user (allow_other) gets the others' bits; chdir obeys x.
# - ioctl: ENOTTY, so `lsattr` fails (EOPNOTSUPP after the kernel's translation) quietly.
# - names: a name that is not UTF-8 fails with EILSEQ (create, mkdir, rename to it, lookup); a
#   decomposed name finds the entry made under its composed (NFC) spelling and `ls` shows the NFC
#   one; 255 bytes is allowed and 256 is ENAMETOOLONG; link(2) fails with EPERM and links nothing.
# - none of these leaves a "[Not Implemented]" warning in logs/mount.log.
# - coalescing, on a second mount with the default options: 1,000 files created in one directory
#   and made durable by one fsyncdir cost at most 5 directory publishes (the status's counter).
# - cache bound: with cache-size=8000000, writing 40 MiB in 1 MiB files and reading them back
#   keeps the cache directory's data and read-cache files within the bound plus 2 MiB.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=mount-tests/lib.sh
source "$here/mount-tests/lib.sh"
lib_init ops
for tool in rsync fallocate setpriv lsattr python3; do
    command -v "$tool" >/dev/null || lib_skip "no $tool"
done
[[ "$(id -u)" == 0 ]] || lib_skip "not root (the access checks switch users)"
say "creating 3 storage nodes in $work"
lib_grid 3
chmod 0755 "$work" # another user reaches the mount (the caches keep their own 0700)
mnt="$work/mnt"
lib_mount "$mnt" "allow_other,write-back-delay=0.2"

say "ls -l of 1,000 entries (readdirplus)"
mkdir "$mnt/big"
timeout $T python3 - "$mnt/big" <<'PY' || fail "creating 1,000 files"
import os, sys
d = sys.argv[1]
for i in range(1000):
    with open(os.path.join(d, "f%04d" % i), "wb") as f:
        f.write(b"x" * (i % 7))
    os.chmod(os.path.join(d, "f%04d" % i), 0o600 + (i % 2) * 0o44)
PY
check_listing() {
    timeout $T ls -l --time-style=+ "$mnt/big" >"$work/ls.txt" || fail "ls -l big ($1)"
    python3 - "$work/ls.txt" <<'PY' || fail "ls -l listing ($1): $(head -5 "$work/ls.txt")"
import sys
lines = [l.split() for l in open(sys.argv[1]) if not l.startswith("total")]
assert len(lines) == 1000, len(lines)
for i, f in enumerate(lines):
    mode, size, name = f[0], int(f[4]), f[-1]
    assert name == "f%04d" % i, (i, name)
    assert size == i % 7, (name, size)
    assert mode == ("-rw-r--r--" if i % 2 else "-rw-------"), (name, mode)
PY
}
check_listing first
# The kernel forgets what the listing linked; a second listing must link it again.
sync
echo 2 >/proc/sys/vm/drop_caches || fail "cannot drop the kernel's dentries and inodes"
check_listing "after drop_caches"
sleep 1.2
check_listing "after the TTL"

say "rsync no-op rerun"
mkdir -p "$work/src/d/e"
for i in $(seq 1 50); do head -c $((i * 100)) /dev/urandom >"$work/src/d/f$i"; done
echo hi >"$work/src/d/e/g"
ln -s f1 "$work/src/d/link"
timeout $T rsync -a "$work/src/" "$mnt/dst/" || fail "rsync first run"
sleep 1.2
timeout $T rsync -a --itemize-changes "$work/src/" "$mnt/dst/" >"$work/rsync2.txt" \
    || fail "rsync rerun"
[[ ! -s "$work/rsync2.txt" ]] || fail "rsync rerun changed: $(head -5 "$work/rsync2.txt")"
timeout $T diff -r "$work/src" "$mnt/dst" || fail "rsync copy differs"

say "fallocate"
f="$mnt/fa"
timeout $T fallocate -l 100000 "$f" || fail "fallocate -l on a new file"
[[ "$(stat -c %s "$f")" == 100000 ]] || fail "size after fallocate -l: $(stat -c %s "$f")"
timeout $T cmp "$f" <(head -c 100000 /dev/zero) || fail "fallocated bytes are not zeros"
timeout $T fallocate -l 50 "$f" || fail "fallocate inside the file"
[[ "$(stat -c %s "$f")" == 100000 ]] || fail "fallocate inside the file changed its size"
timeout $T fallocate -n -o 100000 -l 50000 "$f" || fail "fallocate --keep-size"
[[ "$(stat -c %s "$f")" == 100000 ]] || fail "fallocate --keep-size changed the size"
printf abc >"$mnt/fb"
timeout $T fallocate -o 2 -l 8 "$mnt/fb" || fail "fallocate -o 2 -l 8"
[[ "$(od -An -c "$mnt/fb" | tr -s ' ')" == " a b c \0 \0 \0 \0 \0 \0 \0" ]] \
    || fail "fb after fallocate: $(od -An -c "$mnt/fb")"
# util-linux words EOPNOTSUPP by mode ("keep size mode is unsupported"): check the errno itself.
timeout $T python3 - "$f" <<'PY' || fail "punch-hole/zero-range"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDWR)
# linux/falloc.h: KEEP_SIZE 1, PUNCH_HOLE 2, ZERO_RANGE 0x10
for mode in (0x01 | 0x02, 0x10, 0x10 | 0x01):
    r = libc.fallocate(fd, ctypes.c_int(mode), ctypes.c_int64(0), ctypes.c_int64(10))
    assert r == -1 and ctypes.get_errno() == errno.EOPNOTSUPP, (mode, r, ctypes.get_errno())
assert os.fstat(fd).st_size == 100000
os.close(fd)
PY
timeout $T python3 - "$mnt/fc" <<'PY' || fail "os.posix_fallocate"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"head")
os.posix_fallocate(fd, 0, 300000)
assert os.fstat(fd).st_size == 300000, os.fstat(fd).st_size
os.posix_fallocate(fd, 10, 10)
assert os.fstat(fd).st_size == 300000
os.fsync(fd)
os.close(fd)
PY
timeout $T "$LAFS" -d "$client" get tahoe:fc "$work/fc.get" || fail "lafs get fc"
timeout $T cmp "$work/fc.get" <(printf head; head -c 299996 /dev/zero) || fail "fc on the grid"

say "access (no default_permissions)"
printf 'secret' >"$mnt/none" && chmod 0000 "$mnt/none"
printf 'open' >"$mnt/open" && chmod 0644 "$mnt/open"
mkdir "$mnt/private" && chmod 0700 "$mnt/private"
[[ -r "$mnt/none" && -w "$mnt/none" ]] || fail "root cannot read/write a 0000 file"
[[ -x "$mnt/open" ]] && fail "root may execute a 0644 file"
[[ -x "$mnt/private" ]] || fail "root cannot search a 0700 directory"
as_nobody() { timeout $T setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
as_nobody test -r "$mnt/open" || fail "nobody cannot read a 0644 file"
as_nobody test -w "$mnt/open" && fail "nobody may write a root 0644 file"
as_nobody test -r "$mnt/none" && fail "nobody may read a 0000 file"
as_nobody test -x "$mnt/private" && fail "nobody may search a root 0700 directory"
as_nobody bash -c "cd '$mnt/private'" 2>/dev/null && fail "nobody may chdir into a root 0700 directory"
chown 65534 "$mnt/none"
as_nobody test -r "$mnt/none" && fail "the owner's bits of a 0000 file allow reading"
chmod 0400 "$mnt/none"
as_nobody test -r "$mnt/none" || fail "the owner cannot read a 0400 file"

say "ioctl"
if timeout $T lsattr "$mnt/open" 2>"$work/lsattr.err"; then fail "lsattr succeeded"; fi
# The kernel turns the ENOTTY of FS_IOC_GETFLAGS into EOPNOTSUPP (fileattr_get).
grep -Eq "Inappropriate ioctl|Operation not supported" "$work/lsattr.err" \
    || fail "lsattr: $(cat "$work/lsattr.err")"

say "names"
timeout $T python3 - "$mnt" <<'PY' || fail "names"
import errno, os, sys, unicodedata
m = sys.argv[1]
def fails(errno_, f, *args):
    try:
        f(*args)
    except OSError as e:
        assert e.errno == errno_, (f.__name__, args, errno.errorcode[e.errno])
    else:
        raise AssertionError("%s%r succeeded" % (f.__name__, args))
bad = os.path.join(m.encode(), b"bad\xffname")
fails(errno.EILSEQ, os.open, bad, os.O_CREAT | os.O_WRONLY, 0o644)
fails(errno.EILSEQ, os.mkdir, bad)
fails(errno.EILSEQ, os.lstat, bad)
with open(os.path.join(m, "plain"), "w") as f:
    f.write("p")
fails(errno.EILSEQ, os.rename, os.path.join(m.encode(), b"plain"), bad)
composed = "caf\u00e9"                          # NFC: e-acute as one code point
decomposed = unicodedata.normalize("NFD", composed)
assert composed != decomposed
with open(os.path.join(m, composed), "w") as f:
    f.write("nfc")
with open(os.path.join(m, decomposed)) as f:    # the same entry
    assert f.read() == "nfc"
names = os.listdir(m)
assert composed in names and decomposed not in names, [n for n in names if n.startswith("caf")]
with open(os.path.join(m, decomposed), "w") as f:  # O_TRUNC of the same entry, not a second one
    f.write("again")
assert [n for n in os.listdir(m) if n.startswith("caf")] == [composed]
with open(os.path.join(m, composed)) as f:
    assert f.read() == "again"
os.close(os.open(os.path.join(m, "n" * 255), os.O_CREAT | os.O_WRONLY, 0o644))
fails(errno.ENAMETOOLONG, os.open, os.path.join(m, "n" * 256), os.O_CREAT | os.O_WRONLY, 0o644)
fails(errno.ENAMETOOLONG, os.mkdir, os.path.join(m, "d" * 256))
fails(errno.EPERM, os.link, os.path.join(m, "plain"), os.path.join(m, "hard"))
assert not os.path.lexists(os.path.join(m, "hard"))
assert os.stat(os.path.join(m, "plain")).st_nlink == 1
PY

# lafs umount waits for the daemon to exit: its log is complete.
timeout $T "$LAFS" umount "$mnt" || fail "lafs umount"
if grep "Not Implemented" "$client/logs/mount.log"; then fail "unimplemented requests logged"; fi

say "coalescing: 1,000 creates in one directory (default options)"
mnt2="$work/mnt2"
lib_mount "$mnt2"
publishes() {
    timeout $T "$LAFS" status --json "$mnt2" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["publishes"])'
}
mkdir "$mnt2/many"
python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$mnt2/many" \
    || fail "fsyncdir of the new directory"
before="$(publishes)"
timeout $T python3 - "$mnt2/many" <<'PY' || fail "1,000 creates and fsyncdir"
import os, sys
d = sys.argv[1]
for i in range(1000):
    with open(os.path.join(d, "c%04d" % i), "wb") as f:
        f.write(b"%d" % i)
fd = os.open(d, os.O_RDONLY)
os.fsync(fd)  # returns once every entry made above is published
os.close(fd)
PY
after="$(publishes)"
say "publishes for 1,000 creates: $((after - before))"
((after - before <= 5)) || fail "1,000 creates cost $((after - before)) publishes"
timeout $T "$LAFS" -d "$client" ls tahoe:many >"$work/many.ls" || fail "lafs ls many"
[[ "$(wc -l <"$work/many.ls")" == 1000 ]] || fail "the grid lists $(wc -l <"$work/many.ls") of 1,000"
timeout $T "$LAFS" umount "$mnt2" || fail "lafs umount (second mount)"

say "cache bound: cache-size=8000000; 40 MiB written in 1 MiB files, then read back"
mnt3="$work/mnt3"
lib_mount "$mnt3" "cache-size=8000000,write-back-delay=0"
# The bound covers written files (data/) and the read cache (segs/); sampled every 0.1 s.
(
    while :; do
        du -sb "$mnt3.cache/data" "$mnt3.cache/segs" 2>/dev/null | awk '{s += $1} END {print s + 0}'
        sleep 0.1
    done
) >"$work/cache-du.log" &
sampler=$!
head -c $((40 << 20)) /dev/urandom >"$work/rand40"
for i in $(seq 0 39); do
    timeout $T dd if="$work/rand40" of="$mnt3/f$i" bs=1M skip="$i" count=1 status=none \
        || { kill "$sampler"; fail "writing f$i"; }
done
for i in $(seq 0 39); do
    timeout $T cmp <(dd if="$work/rand40" bs=1M skip="$i" count=1 status=none) "$mnt3/f$i" \
        || { kill "$sampler"; fail "f$i read back differs"; }
done
kill "$sampler"
wait "$sampler" 2>/dev/null || true
max="$(sort -n "$work/cache-du.log" | tail -1)"
# One open file (1 MiB) may go past the bound while it is written (SEMANTICS "write"); 1 MiB
# more for a segment being stored as the sample is taken.
say "cache directory peak: $max bytes in $(wc -l <"$work/cache-du.log") samples (bound 8000000)"
((max <= 8000000 + (2 << 20))) || fail "the cache grew to $max bytes with cache-size=8000000"
timeout $T "$LAFS" umount --flush "$mnt3" || fail "lafs umount --flush (third mount)"
say "OK"
