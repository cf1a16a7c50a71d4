#!/usr/bin/env python3
"""fsx.py: an fsx-style property test of a real lafs mount against a local directory.

Random operations on a small set of names (f0 f1 f2 d0 d1, nested up to three deep) are applied
to BOTH the mount and a local reference directory (an ordinary kernel filesystem), and their
results are compared: return values, errno, data read, positions, and stat (type and mode bits,
size, nlink of non-directories, uid, gid; mtime where both sides set it explicitly with utime
and nothing changed it since). Inode numbers and nlink of directories are not compared, nor
atime (SEMANTICS.md: not stored on read); hard links are not tried (SEMANTICS.md: none).

Operations: open/create with O_CREAT|O_EXCL|O_TRUNC|O_APPEND, write and pwrite at random offsets
(holes beyond EOF included), read/pread, lseek, ftruncate/truncate (grow and shrink), mmap read
and mmap write (MAP_SHARED of existing ranges, then msync), fsync, fdatasync, fstat, close,
rename (within and across directories, over existing files, directory over empty directory;
also RENAME_NOREPLACE and RENAME_EXCHANGE), unlink, mkfifo, mkdir, rmdir, symlink/readlink,
chmod, fchmod, utime, futimens, stat/lstat, sorted listdir. Several file descriptors stay open
at once (also across renames and unlinks of their file).

Now and then a "remount" closes everything, unmounts, waits for the daemon to finish, mounts
again with the same cache and compares the whole tree; every other one kills the daemon
(kill -9; SEMANTICS.md: what a call returned is in the journal) instead of unmounting it. At the
end the mount is remounted with a FRESH cache directory (data from the grid only) and the whole
tree is compared once more.

On a mismatch: the seed, the tail of the operation log and the difference, exit status 1.
The mount and unmount commands come from lib.sh (FSX_LIB, with LAFS and client exported).
Python 3 standard library only.
"""

import argparse
import collections
import ctypes
import errno
import mmap
import os
import random
import stat
import subprocess
import sys
import time

NAMES = ["f0", "f1", "f2", "d0", "d1"]
MAX_FDS = 6
PAGE = mmap.ALLOCATIONGRANULARITY
# Offsets reach past 128 KiB (the default segment size) so that writes cross segments.
MAX_OFF = 300 * 1024
MAX_LEN = 40 * 1024


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old, new, flags):
    """rename(2) with flags (glibc's renameat2; Python has no binding)."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new),
                       ctypes.c_uint(flags)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


FALLOC_FL_KEEP_SIZE = 1


def fallocate(fd, mode, offset, length):
    """fallocate(2) with a mode (Python's os.posix_fallocate has none)."""
    if _libc.fallocate(fd, ctypes.c_int(mode), ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Mismatch(Exception):
    pass


def outcome(fn):
    """('ok', value) or ('err', errno name) of calling fn()."""
    try:
        return ("ok", fn())
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, str(e.errno)))


def short(v, n=200):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def data_diff(a, b):
    """Where two byte strings first differ, for the report."""
    if not isinstance(a, (bytes, bytearray)) or not isinstance(b, (bytes, bytearray)):
        return ""
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), n)
    return " (lengths %d/%d, first difference at byte %d: %r vs %r)" % (
        len(a), len(b), i, bytes(a[i:i + 16]), bytes(b[i:i + 16]))


class Fsx:
    def __init__(self, args):
        self.a = args
        self.seed = args.seed
        self.rng = random.Random(args.seed)
        self.roots = [args.mount, args.local]  # side 0: the mount, side 1: the reference
        self.fds = []  # dicts: m, l (fds), path, flags
        self.log = collections.deque(maxlen=args.log_tail)
        self.nops = 0
        # Local inode numbers whose mtime was set explicitly and not changed since.
        self.marked = set()
        self.remounts = [0, 0]  # clean, after kill -9

    # ---- reporting -------------------------------------------------------------------------

    def note(self, text):
        self.log.append("%5d %s" % (self.nops, text))

    def fail(self, what):
        lines = ["fsx: MISMATCH (seed %d, op %d): %s" % (self.seed, self.nops, what),
                 "fsx: last operations (mount result | local result):"]
        lines += ["  " + line for line in self.log]
        lines.append("fsx: reproduce with: FSX_SEEDS= FSX_SEED=%d FSX_OPS=%d FSX_REMOUNT_EVERY=%d "
                     "FSX_MOUNT_OPTS='%s' bash mount-tests/fsx.test.sh (the operations are the "
                     "seed's; the timing of background uploads is not)"
                     % (self.seed, self.a.ops, self.a.remount_every, self.a.mount_opts))
        raise Mismatch("\n".join(lines))

    def both(self, desc, fn, cmp=None):
        """Runs fn(side) on the mount (0) and the reference (1); compares the outcomes."""
        r = [outcome(lambda: fn(0)), outcome(lambda: fn(1))]
        if r[0] == r[1]:
            self.note("%s -> %s" % (desc, short(r[1], 80)))
        else:
            self.note("%s -> %s | %s" % (desc, short(r[0], 80), short(r[1], 80)))
        same = r[0] == r[1] if cmp is None else cmp(r[0], r[1])
        if not same:
            extra = data_diff(r[0][1], r[1][1]) if r[0][0] == r[1][0] == "ok" else ""
            self.fail("%s: mount %s, local %s%s" % (desc, short(r[0]), short(r[1]), extra))
        return r

    # ---- paths and the model of explicit mtimes ----------------------------------------------

    def p(self, side, rel):
        return os.path.join(self.roots[side], rel)

    def existing(self):
        """Relative paths that exist in the reference tree."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.roots[1]):
            rel = os.path.relpath(dirpath, self.roots[1])
            for n in dirnames + filenames:
                out.append(n if rel == "." else os.path.join(rel, n))
        return out

    def path(self, exist_bias=0.6):
        if self.rng.random() < exist_bias:
            ex = self.existing()
            if ex:
                return self.rng.choice(ex)
        depth = self.rng.choice([1, 1, 2, 2, 3])
        comps = [self.rng.choice(NAMES[3:]) for _ in range(depth - 1)]
        return os.path.join(*(comps + [self.rng.choice(NAMES)]))

    def local_ino(self, rel, follow=True):
        try:
            st = os.stat(self.p(1, rel), follow_symlinks=follow)
            return st.st_ino
        except OSError:
            return None

    def unmark(self, ino):
        self.marked.discard(ino)

    def unmark_dirs(self):
        """A namespace change changes some directory's mtime: forget every directory mark."""
        for dirpath, _dirs, _files in os.walk(self.roots[1]):
            self.marked.discard(os.stat(dirpath).st_ino)

    # ---- stat comparison ---------------------------------------------------------------------

    def stat_key(self, st):
        k = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
        if not stat.S_ISDIR(st.st_mode):
            k["size"] = st.st_size
            k["nlink"] = st.st_nlink
        return k

    def stat_pair(self, desc, fn):
        """Compares two stat results; mtime too when the local inode is marked."""
        res = [outcome(lambda: fn(0)), outcome(lambda: fn(1))]
        keys = []
        for kind, v in res:
            keys.append((kind, self.stat_key(v) if kind == "ok" else v))
        if res[1][0] == "ok" and res[1][1].st_ino in self.marked and res[0][0] == "ok":
            keys[0][1]["mtime_ns"] = res[0][1].st_mtime_ns
            keys[1][1]["mtime_ns"] = res[1][1].st_mtime_ns
        self.note("%s -> %s%s" % (desc, short(keys[1], 120),
                                  "" if keys[0] == keys[1] else " | mount " + short(keys[0], 120)))
        if keys[0] != keys[1]:
            self.fail("%s: mount %s, local %s" % (desc, keys[0], keys[1]))
        return res

    # ---- operations --------------------------------------------------------------------------

    def op_open(self):
        if len(self.fds) >= MAX_FDS:
            return self.op_close()
        rel = self.path()
        acc = self.rng.choice([os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_RDWR])
        flags = acc
        if self.rng.random() < 0.6:
            flags |= os.O_CREAT
            if self.rng.random() < 0.3:
                flags |= os.O_EXCL
        if acc != os.O_RDONLY and self.rng.random() < 0.25:
            flags |= os.O_TRUNC
        if acc != os.O_RDONLY and self.rng.random() < 0.2:
            flags |= os.O_APPEND
        mode = self.rng.choice([0o644, 0o600, 0o755, 0o640, 0o666])
        desc = "open %s flags=%s mode=%o" % (rel, flag_names(flags), mode)
        # O_NONBLOCK: a fifo must not block the test (no effect on files and directories).
        r = [outcome(lambda: os.open(self.p(0, rel), flags | os.O_NONBLOCK, mode)),
             outcome(lambda: os.open(self.p(1, rel), flags | os.O_NONBLOCK, mode))]
        if r[0][0] != r[1][0] or (r[0][0] == "err" and r[0] != r[1]):
            for kind, fd in r:
                if kind == "ok":
                    os.close(fd)
            self.note("%s -> %s | %s" % (desc, r[0], r[1]))
            self.fail("%s: mount %s, local %s" % (desc, r[0], r[1]))
        if r[0][0] == "err":
            self.note("%s -> %s" % (desc, r[1]))
            return
        slot = {"m": r[0][1], "l": r[1][1], "path": rel, "flags": flags}
        self.fds.append(slot)
        self.note("%s -> fd#%d" % (desc, len(self.fds) - 1))
        if flags & (os.O_CREAT | os.O_TRUNC):
            self.unmark(os.fstat(slot["l"]).st_ino)
        if flags & os.O_CREAT:
            self.unmark_dirs()

    def fd(self):
        if not self.fds:
            return None
        i = self.rng.randrange(len(self.fds))
        return i, self.fds[i]

    def fdside(self, slot, side):
        return slot["m"] if side == 0 else slot["l"]

    def fdesc(self, i, slot):
        return "fd#%d(%s,%s)" % (i, slot["path"], flag_names(slot["flags"]))

    def local_size(self, slot):
        try:
            return os.fstat(slot["l"]).st_size
        except OSError:
            return 0

    def offset(self, slot):
        size = self.local_size(slot)
        c = self.rng.random()
        if c < 0.5 and size:
            return self.rng.randrange(size)  # inside the file
        if c < 0.7:
            return size  # at EOF
        return self.rng.randrange(MAX_OFF)  # anywhere, holes beyond EOF included

    def data(self):
        n = self.rng.choice([1, 7, 100, 4096, 5000, self.rng.randrange(1, MAX_LEN)])
        return self.rng.randbytes(n)

    def op_pwrite(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        off, buf = self.offset(s), self.data()
        self.both("pwrite %s off=%d len=%d" % (self.fdesc(i, s), off, len(buf)),
                  lambda side: os.pwrite(self.fdside(s, side), buf, off))
        self.unmark(os.fstat(s["l"]).st_ino)

    def op_write(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        buf = self.data()
        self.both("write %s len=%d" % (self.fdesc(i, s), len(buf)),
                  lambda side: (os.write(self.fdside(s, side), buf),
                                os.lseek(self.fdside(s, side), 0, os.SEEK_CUR)))
        self.unmark(os.fstat(s["l"]).st_ino)

    def op_lseek(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        if stat.S_ISDIR(os.fstat(s["l"]).st_mode):
            return self.op_fstat()  # a directory's offsets are the filesystem's own cookies
        whence = self.rng.choice([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])
        off = self.rng.randrange(0, MAX_OFF) if whence == os.SEEK_SET else \
            self.rng.randrange(-2000, 2000)
        self.both("lseek %s off=%d whence=%d" % (self.fdesc(i, s), off, whence),
                  lambda side: os.lseek(self.fdside(s, side), off, whence))

    def op_pread(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        off = self.offset(s)
        n = self.rng.choice([1, 4096, 70000, self.rng.randrange(1, MAX_LEN)])
        self.both("pread %s off=%d len=%d" % (self.fdesc(i, s), off, n),
                  lambda side: os.pread(self.fdside(s, side), n, off))

    def op_read(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        n = self.rng.choice([1, 4096, 70000, self.rng.randrange(1, MAX_LEN)])
        self.both("read %s len=%d" % (self.fdesc(i, s), n),
                  lambda side: (os.read(self.fdside(s, side), n),
                                os.lseek(self.fdside(s, side), 0, os.SEEK_CUR)))

    def new_size(self, cur):
        c = self.rng.random()
        if c < 0.15:
            return 0
        if c < 0.5 and cur:
            return self.rng.randrange(cur)  # shrink
        return cur + self.rng.randrange(1, MAX_OFF // 2)  # grow

    def op_ftruncate(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        size = self.new_size(self.local_size(s))
        self.both("ftruncate %s size=%d" % (self.fdesc(i, s), size),
                  lambda side: os.ftruncate(self.fdside(s, side), size))
        self.unmark(os.fstat(s["l"]).st_ino)

    def op_fallocate(self):
        """Mode 0 (extends past EOF, zeros) or KEEP_SIZE (no visible change), inside the file or
        past its end."""
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        off = self.offset(s)
        n = self.rng.choice([1, 4096, self.rng.randrange(1, MAX_LEN)])
        mode = self.rng.choice([0, 0, FALLOC_FL_KEEP_SIZE])
        self.both("fallocate %s mode=%d off=%d len=%d" % (self.fdesc(i, s), mode, off, n),
                  lambda side: fallocate(self.fdside(s, side), mode, off, n))
        self.unmark(os.fstat(s["l"]).st_ino)

    def op_truncate(self):
        rel = self.path(0.8)
        try:
            cur = os.stat(self.p(1, rel)).st_size
        except OSError:
            cur = 0
        size = self.new_size(cur)
        ino = self.local_ino(rel)
        self.both("truncate %s size=%d" % (rel, size),
                  lambda side: os.truncate(self.p(side, rel), size))
        self.unmark(ino)

    def mmap_range(self, s):
        size = self.local_size(s)
        if size == 0:
            return None
        off = self.rng.randrange(0, size) // PAGE * PAGE
        length = self.rng.randrange(1, min(size - off, 3 * MAX_LEN) + 1)
        return off, length

    def op_mmap_read(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        rg = self.mmap_range(s)
        if rg is None:
            return self.op_pwrite()
        off, length = rg

        def rd(side):
            with mmap.mmap(self.fdside(s, side), off + length - off, mmap.MAP_SHARED,
                           mmap.PROT_READ, offset=off) as m:
                return m[:]

        self.both("mmap-read %s off=%d len=%d" % (self.fdesc(i, s), off, length), rd)

    def op_mmap_write(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        rg = self.mmap_range(s)
        if rg is None:
            return self.op_pwrite()
        off, length = rg
        start = self.rng.randrange(length)
        buf = self.rng.randbytes(self.rng.randrange(1, length - start + 1))

        def wr(side):
            with mmap.mmap(self.fdside(s, side), length, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE, offset=off) as m:
                m[start:start + len(buf)] = buf
                m.flush()
            return len(buf)

        self.both("mmap-write %s map=%d+%d at=%d len=%d"
                  % (self.fdesc(i, s), off, length, start, len(buf)), wr)
        self.unmark(os.fstat(s["l"]).st_ino)

    def op_fsync(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        fn = self.rng.choice([os.fsync, os.fdatasync])
        self.both("%s %s" % (fn.__name__, self.fdesc(i, s)),
                  lambda side: fn(self.fdside(s, side)))

    def op_fstat(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        self.stat_pair("fstat %s" % self.fdesc(i, s), lambda side: os.fstat(self.fdside(s, side)))

    def op_close(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        del self.fds[i]
        self.both("close %s" % self.fdesc(i, s), lambda side: os.close(self.fdside(s, side)))

    def op_rename(self):
        src = self.path(0.85)
        c = self.rng.random()
        if c < 0.3:
            # Within the same directory.
            dst = os.path.join(os.path.dirname(src), self.rng.choice(NAMES))
        else:
            dst = self.path(0.5)
        src_ino = self.local_ino(src, follow=False)
        dst_ino = self.local_ino(dst, follow=False)
        flags = self.rng.choice([0, 0, 0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE])
        name = {0: "rename", RENAME_NOREPLACE: "rename-noreplace",
                RENAME_EXCHANGE: "rename-exchange"}[flags]
        r = self.both("%s %s -> %s" % (name, src, dst),
                      lambda side: renameat2(self.p(side, src), self.p(side, dst), flags))
        if r[1][0] == "ok":
            if src_ino != dst_ino and flags != RENAME_EXCHANGE:
                self.unmark(dst_ino)
            self.unmark_dirs()

    def op_unlink(self):
        rel = self.path(0.8)
        ino = self.local_ino(rel, follow=False)
        r = self.both("unlink %s" % rel, lambda side: os.unlink(self.p(side, rel)))
        if r[1][0] == "ok":
            self.unmark(ino)
            self.unmark_dirs()

    def op_mkdir(self):
        rel = self.path(0.3)
        mode = self.rng.choice([0o755, 0o700, 0o775, 0o750])
        r = self.both("mkdir %s mode=%o" % (rel, mode),
                      lambda side: os.mkdir(self.p(side, rel), mode))
        if r[1][0] == "ok":
            self.unmark_dirs()

    def op_rmdir(self):
        rel = self.path(0.8)
        ino = self.local_ino(rel, follow=False)
        r = self.both("rmdir %s" % rel, lambda side: os.rmdir(self.p(side, rel)))
        if r[1][0] == "ok":
            self.unmark(ino)
            self.unmark_dirs()

    def op_symlink(self):
        rel = self.path(0.3)
        # Relative targets that never leave the tree (no ".."), dangling ones included.
        target = self.rng.choice([self.rng.choice(NAMES), "d0/f1", "d1", "nowhere", "d0/d1/f2"])
        r = self.both("symlink %s -> %s" % (rel, target),
                      lambda side: os.symlink(target, self.p(side, rel)))
        if r[1][0] == "ok":
            self.unmark(self.local_ino(rel, follow=False))
            self.unmark_dirs()

    def op_mkfifo(self):
        rel = self.path(0.3)
        r = self.both("mkfifo %s" % rel, lambda side: os.mkfifo(self.p(side, rel), 0o640))
        if r[1][0] == "ok":
            self.unmark(self.local_ino(rel, follow=False))
            self.unmark_dirs()

    def op_readlink(self):
        rel = self.path(0.8)
        self.both("readlink %s" % rel, lambda side: os.readlink(self.p(side, rel)))

    def op_chmod(self):
        rel = self.path(0.8)
        mode = self.rng.randrange(0o1000) | self.rng.choice([0, 0, 0, 0o1000])
        self.both("chmod %s %o" % (rel, mode), lambda side: os.chmod(self.p(side, rel), mode))

    def op_utime(self):
        rel = self.path(0.8)
        if self.rng.random() < 0.2:
            ino = self.local_ino(rel)
            self.both("utime %s now" % rel, lambda side: os.utime(self.p(side, rel)))
            self.unmark(ino)
            return
        at = self.rng.randrange(10**18, 2 * 10**18)
        mt = self.rng.randrange(0, 2 * 10**18)
        r = self.both("utime %s atime=%d mtime=%d" % (rel, at, mt),
                      lambda side: os.utime(self.p(side, rel), ns=(at, mt)))
        if r[1][0] == "ok":
            ino = self.local_ino(rel)
            if ino is not None:
                self.marked.add(ino)

    def op_fchmod(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        mode = self.rng.randrange(0o1000)
        self.both("fchmod %s %o" % (self.fdesc(i, s), mode),
                  lambda side: os.chmod(self.fdside(s, side), mode))

    def op_futime(self):
        f = self.fd()
        if not f:
            return self.op_open()
        i, s = f
        at = self.rng.randrange(10**18, 2 * 10**18)
        mt = self.rng.randrange(0, 2 * 10**18)
        r = self.both("futimens %s atime=%d mtime=%d" % (self.fdesc(i, s), at, mt),
                      lambda side: os.utime(self.fdside(s, side), ns=(at, mt)))
        if r[1][0] == "ok":
            self.marked.add(os.fstat(s["l"]).st_ino)

    def op_stat(self):
        rel = self.path(0.8)
        follow = self.rng.random() < 0.5
        self.stat_pair("%s %s" % ("stat" if follow else "lstat", rel),
                       lambda side: os.stat(self.p(side, rel), follow_symlinks=follow))

    def op_listdir(self):
        rel = self.rng.choice(["."] + [p for p in self.existing()] + ["nowhere"])
        self.both("listdir %s" % rel, lambda side: sorted(os.listdir(self.p(side, rel))))

    def op_readfile(self):
        rel = self.path(0.8)

        def rd(side):
            fd = os.open(self.p(side, rel), os.O_RDONLY | os.O_NONBLOCK)
            try:
                out = []
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        return b"".join(out)
                    out.append(b)
            finally:
                os.close(fd)

        self.both("read-whole %s" % rel, rd)

    OPS = [
        ("open", 12), ("pwrite", 14), ("write", 5), ("lseek", 2), ("pread", 8), ("read", 4),
        ("ftruncate", 4), ("fallocate", 2), ("truncate", 3), ("mmap_read", 4),
        ("mmap_write", 4), ("fsync", 2), ("fstat", 4), ("close", 8), ("rename", 6),
        ("unlink", 4), ("mkdir", 4), ("rmdir", 2), ("symlink", 2), ("mkfifo", 1),
        ("readlink", 1), ("chmod", 3), ("fchmod", 1), ("utime", 3), ("futime", 2), ("stat", 5),
        ("listdir", 3), ("readfile", 4),
    ]

    # ---- whole tree, remounts ----------------------------------------------------------------

    def tree(self, side):
        out = {}
        root = self.roots[side]
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            for n in sorted(dirnames + filenames):
                r = n if rel == "." else os.path.join(rel, n)
                full = os.path.join(root, r)
                st = os.lstat(full)
                k = self.stat_key(st)
                if side == 1 and st.st_ino in self.marked:
                    k["mtime_ns"] = st.st_mtime_ns
                if stat.S_ISLNK(st.st_mode):
                    k["target"] = os.readlink(full)
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        k["data"] = f.read()
                out[r] = k
        return out

    def compare_trees(self, when):
        ref = self.tree(1)
        got = self.tree(0)
        for r, k in ref.items():
            if "mtime_ns" in k and r in got:
                got[r]["mtime_ns"] = os.lstat(os.path.join(self.roots[0], r)).st_mtime_ns
        diffs = []
        for r in sorted(set(ref) | set(got)):
            if r not in got:
                diffs.append("  %s: missing on the mount (local %s)" % (r, short(ref[r])))
            elif r not in ref:
                diffs.append("  %s: only on the mount (%s)" % (r, short(got[r])))
            elif ref[r] != got[r]:
                for key in sorted(set(ref[r]) | set(got[r])):
                    a, b = got[r].get(key), ref[r].get(key)
                    if a != b:
                        diffs.append("  %s: %s: mount %s, local %s%s"
                                     % (r, key, short(a), short(b), data_diff(a, b)))
        self.note("compare whole tree (%s): %d entries%s"
                  % (when, len(ref), ", %d differences" % len(diffs) if diffs else ""))
        if diffs:
            self.fail("whole tree after %s differs:\n%s" % (when, "\n".join(diffs)))

    def close_all(self):
        while self.fds:
            s = self.fds.pop()
            self.both("close %s" % s["path"], lambda side: os.close(self.fdside(s, side)))

    def shell(self, what, script, *args):
        env = dict(os.environ)
        r = subprocess.run(["bash", "-c", 'source "$FSX_LIB"; lib_name=fsx; ' + script, "fsx"]
                           + list(args), env=env, timeout=self.a.step_timeout)
        if r.returncode != 0:
            self.fail("%s failed (exit %d)" % (what, r.returncode))

    def daemons(self):
        """Pids of our mount daemons serving self.roots[0] (still flushing after an unmount)."""
        want = os.path.realpath(self.roots[0]).encode()
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"--foreground" in argv and b"mount" in argv and \
                    any(os.path.realpath(a) == want for a in argv if a.startswith(b"/")):
                out.append(int(pid))
        return out

    def umount(self):
        self.close_all()
        self.shell("unmount", 'lib_umount "$1"', self.roots[0])
        # fusermount3 -u returns when the mount is gone; the daemon then still uploads what is
        # pending (Filesystem::destroy). Wait for it: the next mount must not share the cache
        # with it, and a mount with a fresh cache must find everything on the grid.
        deadline = time.time() + self.a.step_timeout
        while self.daemons():
            if time.time() > deadline:
                self.fail("the mount daemon did not exit after the unmount")
            time.sleep(0.1)

    def mount(self, cache):
        opts = "cache-dir=%s" % cache
        if self.a.mount_opts:
            opts += "," + self.a.mount_opts
        self.shell("mount", 'lib_mount "$1" "$2"', self.roots[0], opts)

    def crash(self):
        """kill -9 of our mount daemon (SEMANTICS.md: a call that returned is in the journal and
        the next mount with the same cache finishes it), then the dead mount is unmounted."""
        self.close_all()
        pids = self.daemons()
        if len(pids) != 1:
            self.fail("expected one mount daemon for %s, found %r" % (self.roots[0], pids))
        os.kill(pids[0], 9)
        deadline = time.time() + self.a.step_timeout
        while self.daemons():
            if time.time() > deadline:
                self.fail("the killed mount daemon is still there")
            time.sleep(0.05)
        self.shell("unmount of the dead mount",
                   'timeout $T fusermount3 -u "$1" || timeout $T fusermount3 -uz "$1"; '
                   'timeout $T bash -c "while mountpoint -q \'$1\'; do sleep 0.1; done"',
                   self.roots[0])

    def remount(self, fresh=False, crash=False):
        if crash:
            self.crash()
        else:
            self.umount()
        if fresh:
            self.cache_gen += 1
        cache = "%s.%d" % (self.a.cache, self.cache_gen)
        how = "%s%s cache" % ("after kill -9, " if crash else "", "fresh" if fresh else "same")
        self.note("remount (%s %s)" % (how, os.path.basename(cache)))
        self.remounts[crash] += 1
        self.mount(cache)
        self.compare_trees("remount %s" % how)

    def run(self):
        self.cache_gen = 0
        ops = [name for name, _w in self.OPS]
        weights = [w for _n, w in self.OPS]
        for self.nops in range(1, self.a.ops + 1):
            if self.a.remount_every and not self.a.no_mount and self.nops % self.a.remount_every == 0:
                # Every other remount kills the daemon instead of unmounting it.
                self.remount(crash=self.a.crash and self.nops // self.a.remount_every % 2 == 0)
                continue
            name = self.rng.choices(ops, weights)[0]
            getattr(self, "op_" + name)()
        self.nops += 1
        self.close_all()
        self.compare_trees("the last operation")
        if not self.a.no_mount:
            self.remount(fresh=True)
            self.umount()


FLAG_NAMES = [("O_WRONLY", os.O_WRONLY), ("O_RDWR", os.O_RDWR), ("O_CREAT", os.O_CREAT),
              ("O_EXCL", os.O_EXCL), ("O_TRUNC", os.O_TRUNC), ("O_APPEND", os.O_APPEND)]


def flag_names(flags):
    names = [n for n, v in FLAG_NAMES if flags & v]
    return "|".join(names) if names else "O_RDONLY"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mount", required=True, help="the mounted directory (mounted already)")
    ap.add_argument("--local", required=True, help="an empty local reference directory")
    ap.add_argument("--cache", required=True,
                    help="cache directory prefix; the mount uses PREFIX.0, fresh ones PREFIX.N")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--remount-every", type=int, default=700, help="0: never")
    ap.add_argument("--crash", type=int, default=1,
                    help="1: every other remount is a kill -9 of the daemon instead of an unmount")
    ap.add_argument("--mount-opts", default="", help="extra mount options")
    ap.add_argument("--no-mount", action="store_true",
                    help="self-test of the harness: --mount is a plain directory, no remounts")
    ap.add_argument("--log-tail", type=int, default=40)
    ap.add_argument("--step-timeout", type=float, default=180)
    a = ap.parse_args()
    os.umask(0o022)
    fsx = Fsx(a)
    start = time.time()
    try:
        fsx.run()
    except Mismatch as e:
        print(str(e), file=sys.stderr)
        return 1
    print("fsx: seed %d: %d operations ok, remounts: %d after unmount, %d after kill -9 (%.1f s)"
          % (a.seed, a.ops, fsx.remounts[0], fsx.remounts[1], time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
