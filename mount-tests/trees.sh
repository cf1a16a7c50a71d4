# mount-tests/trees.sh: file trees for the real-mount tests (sourced after lib.sh).
#
#   tree_gen DIR NFILES SEED [NDIRS]
#                              # a deterministic tree: NDIRS (default 60) nested dirs, NFILES
#                              # regular files of various sizes (empty, LIT-sized, a few
#                              # 100 KiB+), symlinks
#                              # (relative, absolute, dangling, to a directory), modes 0600/0640/
#                              # 0644/0755/0444, directories 0700/0750/0755, mtimes in the past
#   tree_manifest DIR          # one line per entry: path, type, mode, owner, size, mtime (ns),
#                              # symlink target or content hash (directory sizes left out: they
#                              # are the filesystem's own)
#   tree_compare SRC DST WHAT  # diff -r plus the manifests; fails naming the first differences
#   now                        # seconds since the epoch with fractions, for timings

now() { date +%s.%N; }
# elapsed START: seconds since START (from `now`), one decimal.
elapsed() { python3 -c "import sys,time; print('%.1f' % (time.time() - float(sys.argv[1])))" "$1"; }

tree_gen() {
    timeout 300 python3 - "$1" "$2" "$3" "${4:-60}" <<'PY'
import os, random, sys
root, nfiles, seed, ndirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
os.makedirs(root)
dirs = [root]
for i in range(ndirs):
    parent = rnd.choice(dirs)
    if os.path.relpath(parent, root).count("/") >= 3:
        parent = root
    d = os.path.join(parent, "d%02d" % i)
    os.mkdir(d)
    dirs.append(d)
big = set(rnd.sample(range(nfiles), 4))
files = []
for i in range(nfiles):
    d = rnd.choice(dirs)
    name = "f%04d%s" % (i, rnd.choice(["", ".txt", ".bin", " with space", "-caf\u00e9"]))
    p = os.path.join(d, name)
    if i % 40 == 0:
        size = 0
    elif i in big:
        size = rnd.randint(100 * 1024, 700 * 1024)
    elif i % 7 == 0:
        size = rnd.randint(1, 55)  # LIT caps
    else:
        size = int(rnd.expovariate(1 / 3000))
    with open(p, "wb") as f:
        f.write(rnd.randbytes(size))
    os.chmod(p, rnd.choice([0o644, 0o644, 0o600, 0o640, 0o755, 0o444]))
    files.append(p)
links = []
for i in range(12):
    d = rnd.choice(dirs)
    kind = i % 4
    if kind == 0:  # relative, to a file
        target = os.path.relpath(rnd.choice(files), d)
    elif kind == 1:
        target = "/etc/hostname"
    elif kind == 2:
        target = "no/such/target-%d" % i
    else:  # relative, to a directory
        target = os.path.relpath(rnd.choice(dirs), d)
    p = os.path.join(d, "link%02d" % i)
    os.symlink(target, p)
    links.append(p)
def past():
    # 2001..2020, with nanoseconds
    return rnd.randint(978307200, 1577836800) * 10**9 + rnd.randint(0, 10**9 - 1)
for p in files:
    t = past()
    os.utime(p, ns=(t, t))
for p in links:
    t = past()
    os.utime(p, ns=(t, t), follow_symlinks=False)
for d in sorted(dirs, key=lambda d: -d.count("/")):
    if d != root:
        os.chmod(d, rnd.choice([0o700, 0o750, 0o755]))
    t = past()
    os.utime(d, ns=(t, t))
PY
}

tree_manifest() {
    timeout 600 python3 - "$1" <<'PY'
import hashlib, os, stat, sys
root = sys.argv[1]
out = []
def entry(p):
    st = os.lstat(p)
    rel = os.path.relpath(p, root)
    mode = "%04o" % stat.S_IMODE(st.st_mode)
    own = "%d:%d" % (st.st_uid, st.st_gid)
    if stat.S_ISLNK(st.st_mode):
        what = ("l", str(st.st_size), "-> " + os.readlink(p))
    elif stat.S_ISDIR(st.st_mode):
        what = ("d", "-", "")
    elif stat.S_ISREG(st.st_mode):
        with open(p, "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()[:16]
        what = ("f", str(st.st_size), h)
    else:
        what = ("?", str(st.st_size), "")
    out.append("\t".join([rel, what[0], mode, own, what[1], str(st.st_mtime_ns), what[2]]))
for dirpath, dirnames, filenames in os.walk(root):
    entry(dirpath)
    for n in filenames:
        entry(os.path.join(dirpath, n))
    for n in dirnames:
        if os.path.islink(os.path.join(dirpath, n)):
            entry(os.path.join(dirpath, n))
print("\n".join(sorted(out)))
PY
}

tree_compare() {
    local src="$1" dst="$2" what="$3" d
    d="$(timeout 600 diff -r --no-dereference "$src" "$dst" 2>&1)" \
        || fail "$what: diff -r differs: $(head -c 2000 <<<"$d")"
    tree_manifest "$src" >"$work/manifest.src" || fail "$what: manifest of $src"
    tree_manifest "$dst" >"$work/manifest.dst" || fail "$what: manifest of $dst"
    d="$(python3 - "$work/manifest.src" "$work/manifest.dst" <<'PY'
import sys
def load(p):
    return {l.split("\t", 1)[0]: l for l in open(p).read().splitlines()}
a, b = load(sys.argv[1]), load(sys.argv[2])
bad = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
for k in bad[:12]:
    print("  source: %s\n  mount:  %s" % (a.get(k, k + "\t(absent)"), b.get(k, k + "\t(absent)")))
if bad:
    print("  (%d entries differ of %d)" % (len(bad), len(a)))
    sys.exit(1)
PY
)" || fail "$what: entries differ (path type mode uid:gid size mtime_ns target|sha256):
$d"
}

# umount_flushed MNT: unmounts MNT and waits until its mount daemon has exited (it uploads and
# publishes everything pending first), so a later mount with a fresh cache sees it all. This is
# what `lafs umount` does.
umount_flushed() {
    local mnt="$1"
    timeout 300 "$LAFS" umount "$mnt" \
        || fail "lafs umount $mnt: the daemon did not unmount and exit (finish its flush)"
    ! mountpoint -q "$mnt" || fail "$mnt still mounted after lafs umount"
}
