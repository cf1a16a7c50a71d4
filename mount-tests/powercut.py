#!/usr/bin/env python3
"""mount-tests/powercut.py: the workload and the checker of powercut.test.sh.

    powercut.py base MNT LOG       w/b0..b24 (version 0) and w/sub/, each fsync'd
    powercut.py settle MNT LOG     overwrites, renames, moves, a replace by rename, an unlink,
                                   new files; some fsync'd, most only closed
    powercut.py churn MNT LOG      the same kinds of changes in a loop until killed, one file
                                   held open half written
    powercut.py check MNT LOG      checks what the mount shows against LOG
    powercut.py synced LOG         NAME KEY VER of each file fsync'd and not changed since
    powercut.py content KEY VER    writes that version's content to stdout
    powercut.py ages LOG CUT NAME..  for each entry NAME set aside by the replay, how long
                                   before the cut (time CUT) its last change under w/ began
    powercut.py partial SRC DST    DST is a part of an `rsync -a SRC/ DST/` interrupted by the
                                   cut: every entry there is in SRC and every file complete,
                                   rsync's temporary files (".NAME.XXXXXX") too

Every file's content names itself: a first line "KEY vVER" and then bytes derived from KEY and
VER only (sizes from LIT-sized to ~300 KB), so the checker knows from any file which version
it claims to be and whether it is exactly that version: a torn file, a mix of two versions or
a hole of zeros cannot pass.

LOG (JSON lines, on a disk that is not cut) gets each change BEFORE it is made and each
barrier AFTER it returned: `fsync` (the file's fsync returned) and `settled` (everything was
closed, then nothing happened for a while: every closed file is sealed, SEMANTICS.md point 1).
A change that was logged may or may not have happened at the cut; a barrier did happen.

The check, for every name under w/: what it shows is one of the states the name had at or
after its last barrier (absent, or a file identity KEY), and that file is exactly one of the
versions KEY had at or after KEY's last barrier (complete, never torn). And every identity that
was at a name at its last barrier, and was not removed or replaced since, is still somewhere.
"""
import hashlib
import json
import os
import random
import sys
import time


def content(key, ver):
    n = int.from_bytes(hashlib.sha256(f"{key}/{ver}".encode()).digest()[:4], "little")
    size = [20, 3000 + n % 5000, 40_000 + n % 60_000, 150_000 + n % 150_000][n % 4]
    head = f"{key} v{ver}\n".encode()
    return head + random.Random(f"{key}/{ver}").randbytes(max(0, size - len(head)))


class Log:
    def __init__(self, path):
        self.f = open(path, "a")

    def __call__(self, **rec):
        self.f.write(json.dumps(dict(rec, t=round(time.time(), 3))) + "\n")
        self.f.flush()


class Work:
    def __init__(self, mnt, log):
        self.w = os.path.join(mnt, "w")
        self.log = Log(log)

    def p(self, name):
        return os.path.join(self.w, name)

    def write(self, name, key, ver, fsync=False, trunc=True):
        """Writes version VER of KEY at NAME (O_TRUNC, or rewritten in place and cut to size)."""
        self.log(op="write", name=name, key=key, ver=ver)
        data = content(key, ver)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else 0)
        fd = os.open(self.p(name), flags, 0o644)
        try:
            os.pwrite(fd, data, 0)
            if not trunc:
                os.ftruncate(fd, len(data))
            if fsync:
                os.fsync(fd)
                self.log(op="fsync", name=name)
        finally:
            os.close(fd)

    def rename(self, src, dst):
        self.log(op="rename", src=src, dst=dst)
        os.rename(self.p(src), self.p(dst))

    def unlink(self, name):
        self.log(op="unlink", name=name)
        os.unlink(self.p(name))

    def settled(self, secs):
        time.sleep(secs)
        self.log(op="settled")


def base(wk):
    os.makedirs(wk.p("sub"))
    for i in range(25):
        wk.write(f"b{i}", f"b{i}", 0, fsync=True)


def settle(wk):
    for i in range(0, 4):  # overwritten, only closed
        wk.write(f"b{i}", f"b{i}", 1)
    for i in range(4, 6):  # overwritten, fsync'd
        wk.write(f"b{i}", f"b{i}", 1, fsync=True)
    for i in range(6, 8):  # fsync'd, then overwritten in place and closed
        wk.write(f"b{i}", f"b{i}", 1, fsync=True)
        wk.write(f"b{i}", f"b{i}", 2, trunc=False)
    for i in range(8, 10):  # renamed unchanged
        wk.rename(f"b{i}", f"r{i}")
    for i in range(10, 12):  # overwritten, then moved to another directory
        wk.write(f"b{i}", f"b{i}", 1)
        wk.rename(f"b{i}", f"sub/m{i}")
    wk.write(".t12", "t12", 0)  # replaced by rename (what rsync and editors do)
    wk.rename(".t12", "b12")
    wk.unlink("b13")
    for i in range(6):  # new, only closed
        wk.write(f"n{i}", f"n{i}", 0)
    for i in range(6, 8):  # new, fsync'd
        wk.write(f"n{i}", f"n{i}", 0, fsync=True)


def churn(wk):
    """Changes to b14..b22 until killed; b24 is held open with half of a new version written."""
    wk.log(op="write", name="b24", key="b24", ver=1)
    held = os.open(wk.p("b24"), os.O_WRONLY | os.O_TRUNC)
    data = content("b24", 1)
    os.write(held, data[: len(data) // 2])
    wk.log(op="held", name="b24")
    cur = {f"b{i}": f"b{i}" for i in range(14, 23)}
    ver = {}
    k = 0
    while True:
        name = f"b{14 + k % 9}"
        if k % 6 == 5:  # a new file renamed over it
            key = f"t{k}"
            wk.write(f".{key}", key, 0)
            wk.rename(f".{key}", name)
            cur[name] = key
        elif k % 6 == 3:  # moved to sub/ and back
            wk.rename(name, f"sub/{name}")
            wk.rename(f"sub/{name}", name)
        else:
            key = cur[name]
            ver[key] = ver.get(key, 0) + 1
            wk.write(name, key, ver[key], fsync=(k % 4 == 0), trunc=(k % 2 == 0))
        k += 1
        time.sleep(0.02)


class Model:
    """Replays LOG: for each name and each identity, what it may show after the cut."""

    def __init__(self, log):
        self.cur = {}  # name -> key (absent: not in the dict)
        self.ver = {}  # key -> its current version
        self.names = {}  # name -> states allowed since its last barrier (key or None)
        self.vers = {}  # key -> versions allowed since its last barrier
        self.must = set()  # keys that must still be at some name
        self.held = set()
        self.synced = {}  # name -> (key, ver) fsync'd and not changed since
        for line in open(log):
            self.apply(json.loads(line))

    def state(self, name, key):
        self.names.setdefault(name, [None]).append(key)
        if key is None:
            self.cur.pop(name, None)
        else:
            self.cur[name] = key

    def drop(self, name):
        """The identity at NAME is removed or replaced: it need not survive."""
        self.must.discard(self.cur.get(name))

    def apply(self, r):
        op = r["op"]
        if op == "write":
            name, key, ver = r["name"], r["key"], r["ver"]
            if self.cur.get(name) != key:
                self.drop(name)
                self.state(name, key)
            self.vers.setdefault(key, []).append(ver)
            self.ver[key] = ver
            self.synced.pop(name, None)
        elif op == "rename":
            src, dst = r["src"], r["dst"]
            key = self.cur[src]
            if self.cur.get(dst) != key:
                self.drop(dst)
            self.state(src, None)
            self.state(dst, key)
            self.synced.pop(src, None)
            self.synced.pop(dst, None)
        elif op == "unlink":
            self.drop(r["name"])
            self.state(r["name"], None)
            self.synced.pop(r["name"], None)
        elif op == "fsync":
            name = r["name"]
            key = self.cur[name]
            self.names[name] = [key]
            self.vers[key] = [self.ver[key]]
            self.must.add(key)
            self.synced[name] = (key, self.ver[key])
        elif op == "settled":
            for name in self.names:
                self.names[name] = [self.cur.get(name)]
            for key in self.vers:
                self.vers[key] = [self.ver[key]]
            self.must = set(self.cur.values())
        elif op == "held":
            self.held.add(r["name"])


def check(mnt, log):
    m = Model(log)
    w = os.path.join(mnt, "w")
    found = {}
    for dirpath, dirnames, filenames in os.walk(w):
        for n in filenames:
            p = os.path.join(dirpath, n)
            found[os.path.relpath(p, w)] = p
    bad = []
    seen = set()
    counts = {"names": 0, "present": 0, "absent": 0, "older": 0, "held kept": 0}
    for name in sorted(set(m.names) | set(found)):
        allowed = m.names.get(name)
        counts["names"] += 1
        if allowed is None:
            bad.append(f"{name}: present but never written")
            continue
        if name not in found:
            counts["absent"] += 1
            if None not in allowed:
                bad.append(f"{name}: absent; it must be one of {sorted(set(allowed) - {None})}")
            continue
        counts["present"] += 1
        with open(found[name], "rb") as f:
            got = f.read()
        head = got.split(b"\n", 1)[0].split(b" ")
        try:
            key, ver = head[0].decode(), int(head[1][1:].decode())
        except (IndexError, ValueError, UnicodeDecodeError):
            bad.append(f"{name}: torn ({len(got)} bytes, first line {got[:24]!r})")
            continue
        if key not in allowed:
            bad.append(f"{name}: shows {key} v{ver}; allowed here: {allowed}")
            continue
        seen.add(key)
        if ver not in m.vers.get(key, []):
            bad.append(f"{name}: {key} v{ver}, not a version allowed after the cut {m.vers.get(key)}")
            continue
        if got != content(key, ver):
            bad.append(f"{name}: {key} v{ver} is torn ({len(got)} bytes of {len(content(key, ver))})")
            continue
        if ver != m.ver.get(key) or key != m.cur.get(name):
            counts["older"] += 1
        if name in m.held:
            counts["held kept"] += 1
    for key in sorted(m.must - seen):
        bad.append(f"{key}: at no name (it was durable at one and never removed since)")
    for name in m.held:
        if name not in found:
            bad.append(f"{name}: held open at the cut, and its previous version is gone")
    print("checked " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for b in bad[:30]:
        print("  " + b)
    return not bad


def partial(src, dst):
    bad = []
    n = {"files": 0, "temporary files": 0}
    for dirpath, dirnames, filenames in os.walk(dst):
        rel = os.path.relpath(dirpath, dst)
        for d in dirnames:
            s = os.path.join(src, rel, d)
            if os.path.islink(os.path.join(dirpath, d)):
                filenames.append(d)
            elif not os.path.isdir(s) or os.path.islink(s):
                bad.append(f"{os.path.join(rel, d)}: a directory not in the source")
        for f in filenames:
            p = os.path.join(dirpath, f)
            name, kind = f, "files"
            if f.startswith(".") and len(f) > 8 and f[-7] == ".":
                name, kind = f[1:-7], "temporary files"
            s = os.path.join(src, rel, name)
            if os.path.islink(p):
                if not os.path.islink(s) or os.readlink(s) != os.readlink(p):
                    bad.append(f"{os.path.join(rel, f)}: a symlink not in the source")
                continue
            try:
                with open(s, "rb") as a, open(p, "rb") as b:
                    if a.read() != b.read():
                        bad.append(f"{os.path.join(rel, f)}: not the complete source file")
                        continue
            except OSError as e:
                bad.append(f"{os.path.join(rel, f)}: {e}")
                continue
            n[kind] += 1
    print(f"{n['files']} files and {n['temporary files']} temporary files complete")
    for b in bad[:30]:
        print("  " + b)
    return not bad


def ages(log, cut, names):
    last = {}
    for line in open(log):
        r = json.loads(line)
        if r["op"] == "write":
            last[os.path.basename(r["name"])] = r["t"]
        elif r["op"] == "rename":
            last[os.path.basename(r["dst"])] = r["t"]
    out = []
    for n in names:
        if n in last:
            out.append(f"w/{n} ({cut - last[n]:.2f} s)")
    print(", ".join(out) or "none")


def main():
    cmd = sys.argv[1]
    if cmd == "ages":
        ages(sys.argv[2], float(sys.argv[3]), sys.argv[4:])
        return
    if cmd == "content":
        sys.stdout.buffer.write(content(sys.argv[2], int(sys.argv[3])))
        return
    if cmd == "partial":
        sys.exit(0 if partial(sys.argv[2], sys.argv[3]) else 1)
    if cmd == "check":
        sys.exit(0 if check(sys.argv[2], sys.argv[3]) else 1)
    if cmd == "synced":
        for name, (key, ver) in sorted(Model(sys.argv[2]).synced.items()):
            print(name, key, ver)
        return
    wk = Work(sys.argv[2], sys.argv[3])
    if cmd == "base":
        os.makedirs(wk.w)
        base(wk)
    elif cmd == "settle":
        settle(wk)
        wk.settled(3)
    elif cmd == "churn":
        churn(wk)


main()
