#!/usr/bin/env python3
"""A loopback grid of real Tahoe-LAFS 1.20 processes, for lafs interop tests.

Stdlib only; runs under any Python 3.8+ (system python3 or the venv's python). It drives the
`tahoe` executable of a venv made by `.ci/setup` (`--tahoe PATH`, else `$LAFS_TAHOE_VENV/bin/tahoe`,
else `~/.cache/lafs/tahoe-venv/bin/tahoe`).

A grid lives in one directory D:

    D/grid.json            description: node dirs, ports, furl, web URLs, encoding params, pids
    D/introducer/          `tahoe create-introducer`
    D/server-<i>/          `tahoe create-node` (storage servers, storage/shares/<si[:2]>/<si>/<shnum>)
    D/<client name>/       `tahoe create-node --no-storage`, one per encoding configuration
    D/<node>/run.log       stdout+stderr of `tahoe run`

Several clients may share a grid because Tahoe reads k/happy/N and the max segment size from
tahoe.cfg at start-up only: a test that needs several encodings starts one client per encoding
instead of restarting nodes.

Commands (see `--help` of each):

    up      create + start, wait until every client sees every server, then supervise
    create  only create the node directories and grid.json
    start   start an already created grid, wait, then supervise
    put     upload through a client (PUT /uri, or `tahoe put` with --cli); prints the cap
    get     `tahoe get` through a client; writes the file
    shares  list the share files of a storage index (or a cap) on every server, as JSON
    down    stop a grid started by `up`/`start` (supervised or detached)

Process lifetime (everything must stop even if a test dies):

* Supervised (default): `up`/`start` stay in the foreground after printing one line
  `READY <path of grid.json>` on stdout, and stop every node when their stdin reaches EOF, on
  SIGTERM/SIGINT/SIGHUP, or after `--lifetime` seconds. The nodes run `tahoe run` with a pipe
  from the supervisor as stdin; Tahoe 1.20's `tahoe run` exits by itself when stdin closes, so
  even a SIGKILLed supervisor leaves no node behind.
* Detached (`--detach`): nodes run `tahoe run --allow-stdin-close` in their own sessions, the
  command returns once ready, and `down` kills them (pids are in grid.json).

Stopping is bounded: SIGTERM to each node's process group, then SIGKILL after a grace period.
Everything listens on 127.0.0.1 only.
"""

import argparse
import configparser
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

GRID_JSON = "grid.json"
STOP_GRACE_SECONDS = 5.0


class GridError(Exception):
    """A grid operation failed; the message says what and where to look."""


def log(msg):
    print("[tahoe_grid] %s" % msg, file=sys.stderr, flush=True)


def default_tahoe():
    venv = os.environ.get("LAFS_TAHOE_VENV") or os.path.join(
        os.path.expanduser("~"), ".cache", "lafs", "tahoe-venv"
    )
    return os.path.join(venv, "bin", "tahoe")


def free_ports(count):
    """Picks `count` distinct free TCP ports on 127.0.0.1.

    All sockets are held open until every port is chosen so the ports are distinct; another
    process may still grab one before the node binds it (the node then fails to start, which
    `wait_ready` reports).
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path, lines=30):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no %s)\n" % path


def run_checked(argv, timeout, what):
    """Runs a short command; returns stdout; raises GridError with its output on failure/timeout."""
    try:
        p = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise GridError("%s: timed out after %ss: %s" % (what, timeout, " ".join(argv)))
    if p.returncode != 0:
        raise GridError(
            "%s failed (exit %d): %s\nstdout:\n%s\nstderr:\n%s"
            % (
                what,
                p.returncode,
                " ".join(argv),
                p.stdout.decode(errors="replace"),
                p.stderr.decode(errors="replace"),
            )
        )
    return p.stdout.decode()


def run_parallel(jobs, timeout):
    """Runs [(what, argv)] concurrently; raises GridError on the first failure (kills the rest)."""
    procs = []
    try:
        for what, argv in jobs:
            p = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            procs.append((what, argv, p))
        deadline = time.monotonic() + timeout
        for what, argv, p in procs:
            try:
                out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise GridError("%s: timed out after %ss: %s" % (what, timeout, " ".join(argv)))
            if p.returncode != 0:
                raise GridError(
                    "%s failed (exit %d): %s\n%s"
                    % (what, p.returncode, " ".join(argv), out.decode(errors="replace"))
                )
    finally:
        for _, _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def set_config(nodedir, items):
    """Sets tahoe.cfg keys: items = [(section, key, value)]. Tahoe reads the file with configparser."""
    path = os.path.join(nodedir, "tahoe.cfg")
    cp = configparser.RawConfigParser()
    cp.optionxform = str  # keep key case
    with open(path, "r", encoding="utf-8") as f:
        cp.read_file(f)
    for section, key, value in items:
        if not cp.has_section(section):
            cp.add_section(section)
        cp.set(section, key, str(value))
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        cp.write(f)
    os.replace(path + ".tmp", path)


def parse_client_spec(spec):
    """`NAME:K:H:N[:MAXSEG]` -> dict."""
    parts = spec.split(":")
    if len(parts) not in (4, 5) or not parts[0]:
        raise GridError("bad --client %r: want NAME:NEEDED:HAPPY:TOTAL[:MAX_SEGMENT_SIZE]" % spec)
    c = {"name": parts[0], "needed": int(parts[1]), "happy": int(parts[2]), "total": int(parts[3])}
    c["max_segment_size"] = int(parts[4]) if len(parts) == 5 and parts[4] else None
    return c


class Grid:
    """A grid directory and its description (grid.json)."""

    def __init__(self, root, desc):
        self.root = os.path.abspath(root)
        self.desc = desc

    # ---- description ---------------------------------------------------------------------------

    @classmethod
    def load(cls, root):
        path = os.path.join(root, GRID_JSON)
        try:
            with open(path, "r", encoding="utf-8") as f:
                return cls(root, json.load(f))
        except OSError as e:
            raise GridError("no grid at %s (%s); run `up` or `create` first" % (root, e))

    def save(self):
        path = os.path.join(self.root, GRID_JSON)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.desc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(path + ".tmp", path)

    @property
    def tahoe(self):
        return self.desc["tahoe"]

    def nodes(self):
        """Every node, introducer first."""
        intro = [self.desc["introducer"]] if self.desc.get("introducer") else []
        return intro + self.desc["servers"] + self.desc["clients"]

    def client(self, name=None):
        clients = self.desc["clients"]
        if not clients:
            raise GridError("grid has no client node")
        if name is None:
            return clients[0]
        for c in clients:
            if c["name"] == name:
                return c
        raise GridError("no client %r (have %s)" % (name, [c["name"] for c in clients]))

    # ---- create --------------------------------------------------------------------------------

    @classmethod
    def create(cls, root, tahoe, servers, clients, convergence_b32=None, force_foolscap=False,
               introducer=True, servers_yaml=None, expect_servers=None):
        """Creates the node directories.

        `introducer=False` makes a grid without an introducer: clients then only know the
        servers of `servers_yaml` (a file copied to each client's private/servers.yaml), e.g.
        storage servers run by another program. `expect_servers` is how many servers each
        client must see connected before the grid is ready (default: the grid's own servers).
        """
        root = os.path.abspath(root)
        if os.path.exists(os.path.join(root, GRID_JSON)):
            raise GridError("%s already holds a grid; use `start`, or a fresh directory" % root)
        if not os.access(tahoe, os.X_OK):
            raise GridError("tahoe executable not found at %s (run .ci/setup)" % tahoe)
        names = [c["name"] for c in clients]
        if len(set(names)) != len(names) or any(
            n == "introducer" or n.startswith("server-") for n in names
        ):
            raise GridError("client names must be distinct and not 'introducer' or 'server-*'")
        os.makedirs(root, exist_ok=True)
        t0 = time.monotonic()

        nodes = 1 + servers + len(clients)
        ports = free_ports(2 * nodes)  # a tub port and a web port per node

        def node(name, kind, i):
            tub, web = ports[2 * i], ports[2 * i + 1]
            return {
                "name": name,
                "kind": kind,
                "dir": os.path.join(root, name),
                "tub_port": tub,
                "web_port": web,
                "web_url": "http://127.0.0.1:%d/" % web,
                "pid": None,
            }

        intro = node("introducer", "introducer", 0)
        srvs = [node("server-%d" % i, "server", 1 + i) for i in range(servers)]
        clis = []
        for j, spec in enumerate(clients):
            c = node(spec["name"], "client", 1 + servers + j)
            c.update(spec)
            c["convergence_b32"] = convergence_b32
            clis.append(c)

        def listen(n):
            # --hostname cannot be combined with --port/--location; those two pin the tub to
            # loopback (port) and advertise the loopback address (location).
            return [
                "--port=tcp:%d:interface=127.0.0.1" % n["tub_port"],
                "--location=tcp:127.0.0.1:%d" % n["tub_port"],
            ]

        def common(n):
            return listen(n) + [
                "--nickname=%s" % n["name"],
                "--webport=tcp:%d:interface=127.0.0.1" % n["web_port"],
            ]

        # create-introducer takes neither --nickname nor --webport: set in tahoe.cfg below.
        jobs = []
        if introducer:
            jobs.append(
                ("create-introducer", [tahoe, "create-introducer"] + listen(intro) + [intro["dir"]])
            )
        for s in srvs:
            jobs.append(("create-node " + s["name"], [tahoe, "create-node"] + common(s) + [s["dir"]]))
        for c in clis:
            # `create-client` takes no --port/--location (it would pick tub settings itself):
            # `create-node --no-storage` is the same client-only node with a loopback tub.
            argv = [tahoe, "create-node", "--no-storage"] + common(c)
            argv += [
                "--shares-needed=%d" % c["needed"],
                "--shares-happy=%d" % c["happy"],
                "--shares-total=%d" % c["total"],
                c["dir"],
            ]
            jobs.append(("create-node --no-storage " + c["name"], argv))
        log("creating %d nodes in %s" % (len(jobs), root))
        run_parallel(jobs, timeout=120)

        if introducer:
            set_config(intro["dir"], [
                ("node", "nickname", "introducer"),
                ("node", "web.port", "tcp:%d:interface=127.0.0.1" % intro["web_port"]),
            ])
        for s in srvs:
            # create-node reserves 1G of free disk by default: a nearly full test disk must not
            # make servers refuse shares.
            items = [("storage", "reserved_space", "0")]
            if force_foolscap:
                items.append(("storage", "force_foolscap", "true"))
            set_config(s["dir"], items)
            s["storage_dir"] = os.path.join(s["dir"], "storage")
        for c in clis:
            items = []
            if c["max_segment_size"] is not None:
                items.append(
                    ("client", "shares._max_immutable_segment_size_for_testing", c["max_segment_size"])
                )
            if force_foolscap:
                items.append(("client", "force_foolscap", "true"))
            if items:
                set_config(c["dir"], items)
            if convergence_b32 is not None:
                with open(os.path.join(c["dir"], "private", "convergence"), "w") as f:
                    f.write(convergence_b32 + "\n")
            if servers_yaml is not None:
                with open(servers_yaml, "rb") as src:
                    data = src.read()
                with open(os.path.join(c["dir"], "private", "servers.yaml"), "wb") as f:
                    f.write(data)

        desc = {
            "tahoe": os.path.abspath(tahoe),
            "introducer": intro if introducer else None,
            "expect_servers": expect_servers,
            "servers": srvs,
            "clients": clis,
            "force_foolscap": force_foolscap,
            "supervisor_pid": None,
            "mode": None,
        }
        g = cls(root, desc)
        g.save()
        log("created in %.1fs" % (time.monotonic() - t0))
        return g

    # ---- start / wait / stop -------------------------------------------------------------------

    def _spawn(self, n, detached):
        argv = [self.tahoe, "run"]
        if detached:
            argv.append("--allow-stdin-close")
        argv.append(n["dir"])
        logf = open(os.path.join(n["dir"], "run.log"), "ab")
        try:
            p = subprocess.Popen(
                argv,
                # Supervised: a pipe we never write to; when we die it closes and `tahoe run`
                # exits by itself.
                stdin=subprocess.DEVNULL if detached else subprocess.PIPE,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, so stop() can kill the whole group
                cwd=n["dir"],
            )
        finally:
            logf.close()
        n["pid"] = p.pid
        return p

    def start(self, detached=False, timeout=90.0):
        """Starts every node and waits until each client sees every server. Returns the Popens."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        procs = {}
        try:
            intro = self.desc.get("introducer")
            if intro:
                self._start_introducer(intro, detached, deadline, procs)
            for n in self.desc["servers"] + self.desc["clients"]:
                procs[n["name"]] = self._spawn(n, detached)
            self.desc["mode"] = "detached" if detached else "supervised"
            self.desc["supervisor_pid"] = None if detached else os.getpid()
            self.save()
            for s in self.desc["servers"]:
                nodeid_path = os.path.join(s["dir"], "my_nodeid")
                s["nodeid"] = self._wait_for(
                    lambda: _read_nonempty(nodeid_path), deadline, "%s/my_nodeid" % s["name"], procs
                ).strip()
            self.save()
            want = self.desc.get("expect_servers")
            if want is None:
                want = len(self.desc["servers"])
            for c in self.desc["clients"]:
                self._wait_for(
                    lambda: _connected_servers(c["web_url"]) >= want or None,
                    deadline,
                    "client %s to connect to all %d servers (web %s)" % (c["name"], want, c["web_url"]),
                    procs,
                )
            log("grid up in %.1fs: %d servers, clients %s" % (
                time.monotonic() - t0, want, [c["name"] for c in self.desc["clients"]]))
            return procs
        except BaseException:
            self.stop(procs)
            raise

    def _start_introducer(self, intro, detached, deadline, procs):
        """Starts the introducer and points every other node at it (private/introducers.yaml)."""
        procs[intro["name"]] = self._spawn(intro, detached)
        furl_path = os.path.join(intro["dir"], "private", "introducer.furl")
        furl = self._wait_for(
            lambda: _read_nonempty(furl_path),
            deadline,
            "introducer furl at %s" % furl_path,
            procs,
        )
        intro["furl"] = furl.strip()
        for n in self.desc["servers"] + self.desc["clients"]:
            _write_introducers_yaml(n["dir"], intro["furl"])

    def _wait_for(self, probe, deadline, what, procs):
        """Polls probe() until it returns a truthy value; fails on deadline or a node exiting."""
        while True:
            for name, p in procs.items():
                if p.poll() is not None:
                    n = self._node(name)
                    raise GridError(
                        "node %s exited (code %s) while waiting for %s; %s/run.log:\n%s"
                        % (name, p.returncode, what, n["dir"], tail(os.path.join(n["dir"], "run.log")))
                    )
            v = probe()
            if v:
                return v
            if time.monotonic() > deadline:
                logs = "".join(
                    "--- %s/run.log:\n%s" % (n["name"], tail(os.path.join(n["dir"], "run.log"), 10))
                    for n in self.nodes()
                    if n["name"] in procs
                )
                raise GridError("timed out waiting for %s\n%s" % (what, logs))
            time.sleep(0.2)

    def _node(self, name):
        for n in self.nodes():
            if n["name"] == name:
                return n
        raise GridError("no node %r" % name)

    def stop(self, procs=None):
        """Stops every node: SIGTERM to each process group, SIGKILL after a grace period.

        `procs` (name -> Popen) are our children; nodes only known by pid (a detached grid, or
        `down` from another process) are signalled by pid from grid.json.
        """
        procs = dict(procs or {})
        pids = {}
        for n in self.nodes():
            if n.get("pid") and n["name"] not in procs:
                pids[n["name"]] = n["pid"]
        for p in procs.values():
            if p.poll() is None:
                _signal_group(p.pid, signal.SIGTERM)
                if p.stdin:
                    try:
                        p.stdin.close()
                    except OSError:
                        pass
        for pid in pids.values():
            if _is_tahoe_node(pid):
                _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            alive = [p for p in procs.values() if p.poll() is None]
            alive += [pid for pid in pids.values() if _is_tahoe_node(pid)]
            if not alive:
                break
            time.sleep(0.1)
        for name, p in procs.items():
            if p.poll() is None:
                log("node %s still running %ss after SIGTERM; killing" % (name, STOP_GRACE_SECONDS))
                _signal_group(p.pid, signal.SIGKILL)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log("node %s (pid %d) did not die after SIGKILL" % (name, p.pid))
        for name, pid in pids.items():
            if _is_tahoe_node(pid):
                log("node %s still running %ss after SIGTERM; killing" % (name, STOP_GRACE_SECONDS))
                _signal_group(pid, signal.SIGKILL)
        for n in self.nodes():
            n["pid"] = None
        self.desc["supervisor_pid"] = None
        self.desc["mode"] = None
        self.save()

    # ---- operations ----------------------------------------------------------------------------

    def put(self, path, client=None, mutable=False, fmt=None, timeout=120, cli=False):
        """Uploads a file through a client node; returns the cap.

        By default this is the web API call `tahoe put` makes (`PUT /uri`), which saves starting
        a Tahoe CLI process (seconds on a loaded machine); `cli=True` runs `tahoe put` itself.
        """
        c = self.client(client)
        if not cli:
            return self._put_web(c, path, mutable, fmt, timeout)
        argv = [self.tahoe, "-d", c["dir"], "put"]
        if mutable:
            argv.append("--mutable")
        if fmt:
            argv.append("--format=%s" % fmt)
        argv.append(path)
        out = run_checked(argv, timeout, "tahoe put via %s" % c["name"]).strip()
        if not out.startswith("URI:"):
            raise GridError("tahoe put printed no cap: %r" % out[:200])
        return out

    def _put_web(self, c, path, mutable, fmt, timeout):
        query = []
        if mutable:
            query.append("mutable=true")
        if fmt:
            query.append("format=%s" % urllib.parse.quote(fmt))
        url = c["web_url"] + "uri" + ("?" + "&".join(query) if query else "")
        with open(path, "rb") as f:
            data = f.read()
        req = urllib.request.Request(url, data=data, method="PUT")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                out = r.read().decode("utf-8").strip()
        except urllib.error.HTTPError as e:
            raise GridError("PUT /uri via %s: HTTP %d: %s" % (
                c["name"], e.code, e.read().decode("utf-8", "replace")[:2000]))
        except OSError as e:
            raise GridError("PUT /uri via %s failed: %s" % (c["name"], e))
        if not out.startswith("URI:"):
            raise GridError("PUT /uri returned no cap: %r" % out[:200])
        return out

    def get(self, cap, dest, client=None, timeout=120):
        c = self.client(client)
        run_checked([self.tahoe, "-d", c["dir"], "get", cap, dest], timeout, "tahoe get via %s" % c["name"])

    def storage_index(self, cap, timeout=60):
        """The base32 storage index of a cap, from `tahoe debug dump-cap` (Tahoe is the authority)."""
        out = run_checked([self.tahoe, "debug", "dump-cap", cap], timeout, "tahoe debug dump-cap")
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("storage index:"):
                return line.split(":", 1)[1].strip()
        raise GridError("dump-cap printed no storage index for this cap")

    def shares(self, si):
        """Every share file of storage index `si`: [{server, nodeid, shnum, path, size}]."""
        found = []
        for s in self.desc["servers"]:
            d = os.path.join(s["storage_dir"], "shares", si[:2], si)
            if not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                if f.isdigit():
                    p = os.path.join(d, f)
                    found.append({
                        "server": s["name"],
                        "nodeid": s.get("nodeid"),
                        "shnum": int(f),
                        "path": p,
                        "size": os.path.getsize(p),
                    })
        found.sort(key=lambda x: (x["shnum"], x["server"]))
        return found


def _read_nonempty(path):
    try:
        with open(path, "r") as f:
            s = f.read()
    except OSError:
        return None
    return s if s.strip() else None


def _write_introducers_yaml(nodedir, furl):
    # Tahoe 1.20 reads introducers from private/introducers.yaml (`introducer.furl` in tahoe.cfg
    # is rejected). A furl contains no YAML-special characters besides ':', so quote it.
    with open(os.path.join(nodedir, "private", "introducers.yaml"), "w") as f:
        f.write('introducers:\n  default:\n    furl: "%s"\n' % furl)


def _connected_servers(web_url):
    """How many storage servers a client's welcome JSON shows as connected (0 if unreachable).

    Foolscap connections say "Connected to ...", HTTP storage (GBS) ones say "connected".
    """
    try:
        with urllib.request.urlopen(web_url + "?t=json", timeout=5) as r:
            data = json.loads(r.read().decode("utf-8"))
    except (OSError, ValueError, urllib.error.URLError):
        return 0
    return sum(
        1
        for s in data.get("servers", [])
        if str(s.get("connection_status", "")).lower().startswith("connected")
    )


def _signal_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _is_tahoe_node(pid):
    """True if pid is alive and runs `tahoe run` (guards against signalling a recycled pid)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return b"run" in cmd and any(b"tahoe" in a for a in cmd)


# ---- supervision -------------------------------------------------------------------------------


def supervise(grid, procs, lifetime, watch_stdin):
    """Blocks until stdin EOF / a signal / lifetime / a node dying, then stops the grid."""
    import select
    import threading

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    deadline = time.monotonic() + lifetime
    reason = None
    try:
        while not stop.is_set():
            if time.monotonic() > deadline:
                reason = "lifetime of %ss reached" % lifetime
                break
            dead = [name for name, p in procs.items() if p.poll() is not None]
            if dead:
                reason = "node(s) %s exited on their own" % dead
                break
            if watch_stdin:
                r, _, _ = select.select([sys.stdin], [], [], 0.5)
                if r and not os.read(sys.stdin.fileno(), 4096):
                    reason = "stdin closed"
                    break
            else:
                time.sleep(0.5)
        else:
            reason = "signal"
    finally:
        log("stopping grid (%s)" % (reason or "error"))
        grid.stop(procs)


# ---- CLI ---------------------------------------------------------------------------------------


def _add_start_args(p):
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.add_argument("--detach", action="store_true",
                   help="leave the nodes running and return; stop them with `down`")
    p.add_argument("--lifetime", type=float, default=900.0,
                   help="supervised: stop everything after this many seconds")
    p.add_argument("--ignore-stdin", action="store_true",
                   help="supervised: do not stop on stdin EOF (e.g. when backgrounded by a shell)")


def _start_and_supervise(grid, args):
    procs = grid.start(detached=args.detach, timeout=args.timeout)
    print("READY %s" % os.path.join(grid.root, GRID_JSON), flush=True)
    if args.detach:
        return
    supervise(grid, procs, args.lifetime, watch_stdin=not args.ignore_stdin)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tahoe", default=None, help="tahoe executable (default: venv from .ci/setup)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def create_args(p):
        p.add_argument("--dir", required=True)
        p.add_argument("--servers", type=int, default=5)
        p.add_argument("--needed", type=int, default=3)
        p.add_argument("--happy", type=int, default=None, help="default: min(7, servers)")
        p.add_argument("--total", type=int, default=10)
        p.add_argument("--max-segment-size", type=int, default=None)
        p.add_argument("--client", action="append", default=[], metavar="NAME:K:H:N[:MAXSEG]",
                       help="a client node with these encoding parameters (repeatable); "
                            "default: one client 'client' from --needed/--happy/--total")
        p.add_argument("--convergence-b32", default=None,
                       help="convergence secret for every client, Tahoe base32 (lowercase, unpadded)")
        p.add_argument("--force-foolscap", action="store_true",
                       help="use Foolscap instead of the HTTPS storage protocol")
        p.add_argument("--no-introducer", action="store_true",
                       help="no introducer: clients use only --servers-yaml")
        p.add_argument("--servers-yaml", default=None,
                       help="copy this file to every client's private/servers.yaml")
        p.add_argument("--expect-servers", type=int, default=None,
                       help="servers each client must see connected (default: --servers)")

    p = sub.add_parser("up", help="create and start a grid")
    create_args(p)
    _add_start_args(p)
    p = sub.add_parser("create", help="create a grid without starting it")
    create_args(p)
    p = sub.add_parser("start", help="start a created grid")
    p.add_argument("--dir", required=True)
    _add_start_args(p)
    p = sub.add_parser("down", help="stop a running grid")
    p.add_argument("--dir", required=True)
    p = sub.add_parser("put", help="upload a file, print its cap")
    p.add_argument("--dir", required=True)
    p.add_argument("--client", default=None)
    p.add_argument("--mutable", action="store_true")
    p.add_argument("--format", default=None, help="chk, sdmf or mdmf")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--cli", action="store_true", help="run `tahoe put` instead of PUT /uri")
    p.add_argument("file")
    p = sub.add_parser("get", help="download a cap to a file")
    p.add_argument("--dir", required=True)
    p.add_argument("--client", default=None)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("cap")
    p.add_argument("dest")
    p = sub.add_parser("shares", help="list share files (JSON) of a storage index or cap")
    p.add_argument("--dir", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--si")
    g.add_argument("--cap")
    args = ap.parse_args(argv)

    try:
        if args.cmd in ("up", "create"):
            tahoe = args.tahoe or default_tahoe()
            if args.client:
                clients = [parse_client_spec(s) for s in args.client]
            else:
                happy = args.happy if args.happy is not None else min(7, args.servers)
                clients = [{"name": "client", "needed": args.needed, "happy": happy,
                            "total": args.total, "max_segment_size": args.max_segment_size}]
            grid = Grid.create(args.dir, tahoe, args.servers, clients,
                               convergence_b32=args.convergence_b32,
                               force_foolscap=args.force_foolscap,
                               introducer=not args.no_introducer,
                               servers_yaml=args.servers_yaml,
                               expect_servers=args.expect_servers)
            if args.cmd == "up":
                _start_and_supervise(grid, args)
        elif args.cmd == "start":
            _start_and_supervise(Grid.load(args.dir), args)
        elif args.cmd == "down":
            grid = Grid.load(args.dir)
            sup = grid.desc.get("supervisor_pid")
            if sup:
                try:
                    os.kill(sup, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                end = time.monotonic() + STOP_GRACE_SECONDS + 5
                while time.monotonic() < end and _pid_alive(sup):
                    time.sleep(0.1)
                grid = Grid.load(args.dir)
            grid.stop()
        elif args.cmd == "put":
            print(Grid.load(args.dir).put(args.file, client=args.client, mutable=args.mutable,
                                          fmt=args.format, timeout=args.timeout, cli=args.cli))
        elif args.cmd == "get":
            Grid.load(args.dir).get(args.cap, args.dest, client=args.client, timeout=args.timeout)
        elif args.cmd == "shares":
            grid = Grid.load(args.dir)
            si = args.si or grid.storage_index(args.cap)
            print(json.dumps({"storage_index": si, "shares": grid.shares(si)}, indent=1))
    except GridError as e:
        print("tahoe_grid: error: %s" % e, file=sys.stderr, flush=True)
        return 1
    return 0


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of someone else still "exists"; treat it as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


if __name__ == "__main__":
    sys.exit(main())
