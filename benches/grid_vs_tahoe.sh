#!/usr/bin/env bash
# grid_vs_tahoe.sh — `lafs put/get` against `tahoe put/get` on loopback grids (a benchmark
# script, not a test: it asserts nothing about speed, it prints figures).
#
# Usage: benches/grid_vs_tahoe.sh [SIZE...]      SIZE in 1M 64M 256M ... (default: 1M 64M 256M)
#
# One run measures, for each size, with a FRESH random file for every put (a re-put of the same
# file would find the shares already placed and write nothing):
#   1. a grid of 5 Tahoe-LAFS 1.20 storage servers (tests/interop/tahoe_grid.py, 3-of-5,
#      happy 5) and one Tahoe client node: `tahoe put` + `tahoe get` through that client node,
#      then `lafs put` + `lafs get` using the same client node directory (lafs reads its
#      tahoe.cfg and private/servers.yaml) against the same Tahoe storage servers;
#   2. a grid of 5 `lafs run` storage servers: `lafs put` + `lafs get`.
# Reported: wall seconds, MB/s (1 MB = 10^6 bytes), the lafs/tahoe speed ratio, client CPU
# seconds (tahoe: the client node process + the `tahoe` command; lafs: the `lafs` process),
# client CPU per byte, the CPU the 5 storage server processes spent during the operation, and
# peak RSS of the `lafs` process (the figure asked for is `lafs get` of the largest file).
# On a shared machine CPU seconds are the steadier figures; wall time moves with the load.
# Timing and rusage come from a python3 wait4 wrapper (its own start-up is not counted in CPU).
# Every get is checked byte for byte against the file put.
#
# Environment: BENCH_GRIDS (default "tahoe lafs"; "lafs" alone skips the Tahoe grid, and the
# ratios to Tahoe are then not printed); LAFS_TAHOE_VENV (default ~/.cache/lafs/tahoe-venv,
# made by .ci/setup);
# LAFS_BIN (default: `cargo build --release` then target/release/lafs, honouring
# CARGO_TARGET_DIR); BENCH_KEEP=1 keeps the work directory; BENCH_CMD_TIMEOUT (seconds, per
# put/get, default 900).
#
# Everything listens on 127.0.0.1; every process started here is stopped on exit (trap), and
# every wait is bounded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VENV="${LAFS_TAHOE_VENV:-$HOME/.cache/lafs/tahoe-venv}"
TAHOE="$VENV/bin/tahoe"
VPY="$VENV/bin/python3"
GRIDPY="$REPO/tests/interop/tahoe_grid.py"
CMD_TIMEOUT="${BENCH_CMD_TIMEOUT:-900}"
READY_TIMEOUT=60
SERVERS=5
NEEDED=3
HAPPY=5
TOTAL=5

SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(1M 64M 256M)
GRIDS="${BENCH_GRIDS:-tahoe lafs}"
want_grid() { case " $GRIDS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

die() { echo "grid_vs_tahoe: $*" >&2; exit 1; }
want_grid lafs || die "BENCH_GRIDS must include lafs"
[ -x "$TAHOE" ] || die "no tahoe at $TAHOE (run .ci/setup or set LAFS_TAHOE_VENV)"
command -v timeout >/dev/null || die "coreutils timeout is needed"

# Size argument -> bytes (K/M/G are binary units).
bytes_of() {
    python3 - "$1" <<'EOF'
import re, sys
m = re.fullmatch(r"(\d+)([KMG]?)i?B?", sys.argv[1], re.I)
if not m:
    sys.exit("bad size %r (e.g. 1M, 64M, 256M)" % sys.argv[1])
print(int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()])
EOF
}
for s in "${SIZES[@]}"; do bytes_of "$s" >/dev/null || die "bad size $s"; done

if [ -n "${LAFS_BIN:-}" ]; then
    LAFS="$LAFS_BIN"
else
    (cd "$REPO" && cargo build --release --bin lafs >&2) || die "cargo build --release failed"
    LAFS="${CARGO_TARGET_DIR:-$REPO/target}/release/lafs"
fi
[ -x "$LAFS" ] || die "no lafs binary at $LAFS"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/grid_vs_tahoe.XXXXXX")"
TGRID="$WORK/tahoe-grid"
LAFS_PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -f "$TGRID/grid.json" ]; then
        timeout 60 "$VPY" "$GRIDPY" down --dir "$TGRID" >/dev/null 2>&1 || true
    fi
    local p
    for p in "${LAFS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    # Bounded wait, then SIGKILL what is left.
    for _ in $(seq 50); do
        local alive=0
        for p in "${LAFS_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in "${LAFS_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

now() { date +%s.%N; }
# CPU seconds (utime+stime, children not included) of live processes, summed, from
# /proc/PID/stat (clock-tick resolution).
cpu_of() {
    python3 - "$@" <<'EOF'
import os, sys
total = 0
for pid in sys.argv[1:]:
    with open("/proc/%s/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    total += int(fields[11]) + int(fields[12])
print(total / os.sysconf("SC_CLK_TCK"))
EOF
}
calc() { python3 -c "print($1)"; }

# timed OUTFILE CMD...: runs CMD (killed after CMD_TIMEOUT) with stdout to OUTFILE; sets T_WALL,
# T_CPU (user+sys of CMD, from wait4's rusage, microsecond resolution), T_SYS (the sys part) and
# T_RSS_KB (its peak RSS).
timed() {
    local out="$1"; shift
    local res
    res=$(python3 - "$CMD_TIMEOUT" "$out" "$WORK/last.err" "$@" <<'PYEOF'
import os, signal, subprocess, sys, time
limit, out, err, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
with open(out, "wb") as o, open(err, "wb") as e:
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > limit:
            p.send_signal(signal.SIGKILL)
            os.wait4(p.pid, 0)
            sys.exit("timed out after %gs: %s" % (limit, cmd))
        time.sleep(0.002)
    wall = time.monotonic() - t0
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit("exit status %d: %s" % (os.waitstatus_to_exitcode(status), cmd))
print("%.4f %.4f %d %.4f" % (wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, ru.ru_stime))
PYEOF
) || { cat "$WORK/last.err" >&2; die "failed: $*"; }
    read -r T_WALL T_CPU T_RSS_KB T_SYS <<<"$res"
}

ROWS="$WORK/rows"
: >"$ROWS"
# row LABEL OP SIZE BYTES WALL CPU RSS_KB SERVER_CPU [SYS]
row() { echo "$*" >>"$ROWS"; }

fresh_file() { head -c "$2" /dev/urandom >"$1"; }

# ---- Tahoe grid ---------------------------------------------------------------------------
TSERVER_PIDS=()
if want_grid tahoe; then
echo "== starting a Tahoe-LAFS grid ($SERVERS servers, $NEEDED-of-$TOTAL, happy $HAPPY)" >&2
timeout 300 "$VPY" "$GRIDPY" --tahoe "$TAHOE" up --dir "$TGRID" --servers "$SERVERS" \
    --client "bench:$NEEDED:$HAPPY:$TOTAL" --detach --timeout 180 >&2 \
    || die "tahoe grid did not start"
read -r TCLIENT TCLIENT_PID < <("$VPY" - "$TGRID/grid.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))["clients"][0]
print(c["dir"], c["pid"])
EOF
)
[ -d "$TCLIENT" ] && kill -0 "$TCLIENT_PID" 2>/dev/null || die "tahoe client node not running"
read -r -a TSERVER_PIDS < <("$VPY" - "$TGRID/grid.json" <<'EOF'
import json, sys
print(" ".join(str(s["pid"]) for s in json.load(open(sys.argv[1]))["servers"]))
EOF
)
[ ${#TSERVER_PIDS[@]} -eq "$SERVERS" ] || die "tahoe server pids not found in grid.json"

# The Tahoe client learnt its servers from the introducer and caches their announcements in
# private/introducer_default_cache.yaml; lafs has no introducer client, so it gets the same
# announcements as a servers.yaml (the Tahoe client, already running, does not re-read it).
if [ ! -f "$TCLIENT/private/servers.yaml" ]; then
    "$VPY" "$HERE/support/servers_yaml_from_cache.py" "$TCLIENT/private" "$SERVERS" \
        || die "could not build servers.yaml"
fi
fi

# ---- lafs grid ----------------------------------------------------------------------------
echo "== starting a lafs grid ($SERVERS \`lafs run\` servers)" >&2
PORTS=$(python3 - "$SERVERS" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
i=0
CREATORS=()
for port in $PORTS; do
    timeout 120 "$LAFS" create-node --storage "--port=tcp:$port:interface=127.0.0.1" \
        "--location=tcp:127.0.0.1:$port" "--nickname=server$i" --webport=none \
        --reserved-space=0 "$WORK/lafs-server$i" >"$WORK/create$i.log" 2>&1 &
    CREATORS+=($!)
    i=$((i + 1))
done
for p in "${CREATORS[@]}"; do wait "$p" || { cat "$WORK"/create*.log >&2; die "lafs create-node failed"; }; done
for i in $(seq 0 $((SERVERS - 1))); do
    "$LAFS" run "$WORK/lafs-server$i" </dev/null >"$WORK/lafs-server$i.out" 2>"$WORK/lafs-server$i.err" &
    LAFS_PIDS+=($!)
done
for i in $(seq 0 $((SERVERS - 1))); do
    deadline=$(( $(date +%s) + READY_TIMEOUT ))
    until grep -qx ready "$WORK/lafs-server$i.out" 2>/dev/null; do
        kill -0 "${LAFS_PIDS[$i]}" 2>/dev/null || { cat "$WORK/lafs-server$i.err" >&2; die "lafs run server$i exited"; }
        [ "$(date +%s)" -lt "$deadline" ] || die "lafs run server$i not ready in ${READY_TIMEOUT}s"
        sleep 0.1
    done
done
LCLIENT="$WORK/lafs-client"
mkdir -p "$LCLIENT/private"
printf '[node]\nnickname = bench\n\n[client]\nshares.needed = %d\nshares.happy = %d\nshares.total = %d\n\n[storage]\nenabled = false\n' \
    "$NEEDED" "$HAPPY" "$TOTAL" >"$LCLIENT/tahoe.cfg"
for i in $(seq 0 $((SERVERS - 1))); do
    timeout 60 "$LAFS" announcement "$WORK/lafs-server$i" >"$WORK/ann$i.yaml" || die "lafs announcement"
done
"$VPY" - "$LCLIENT/private/servers.yaml" "$WORK"/ann*.yaml <<'EOF' || die "could not merge announcements"
import sys, yaml
storage = {}
for path in sys.argv[2:]:
    storage.update((yaml.safe_load(open(path)) or {}).get("storage") or {})
with open(sys.argv[1], "w") as f:
    yaml.safe_dump({"storage": storage}, f, default_flow_style=False)
EOF

# ---- measurements -------------------------------------------------------------------------
for size in "${SIZES[@]}"; do
    n=$(bytes_of "$size")
    echo "== $size ($n bytes)" >&2

    if want_grid tahoe; then
        # tahoe put/get: client CPU = the node process (from /proc) + the `tahoe` command.
        f="$WORK/t-$size.bin"; fresh_file "$f" "$n"
        c0=$(cpu_of "$TCLIENT_PID"); s0=$(cpu_of "${TSERVER_PIDS[@]}")
        timed "$WORK/cap" "$TAHOE" -d "$TCLIENT" put "$f"
        c1=$(cpu_of "$TCLIENT_PID"); s1=$(cpu_of "${TSERVER_PIDS[@]}")
        cap=$(tail -n 1 "$WORK/cap")
        row tahoe-grid tahoe-put "$size" "$n" "$T_WALL" "$(calc "$T_CPU + $c1 - $c0")" "-" "$(calc "$s1 - $s0")" "-"
        c0=$(cpu_of "$TCLIENT_PID"); s0=$(cpu_of "${TSERVER_PIDS[@]}")
        timed /dev/null "$TAHOE" -d "$TCLIENT" get "$cap" "$WORK/got"
        c1=$(cpu_of "$TCLIENT_PID"); s1=$(cpu_of "${TSERVER_PIDS[@]}")
        cmp -s "$f" "$WORK/got" || die "tahoe get of $size returned other bytes"
        row tahoe-grid tahoe-get "$size" "$n" "$T_WALL" "$(calc "$T_CPU + $c1 - $c0")" "-" "$(calc "$s1 - $s0")" "-"
        rm -f "$f" "$WORK/got"
    fi

    # lafs put/get on the Tahoe servers, then on the lafs servers.
    for grid in tahoe-grid lafs-grid; do
        if [ $grid = tahoe-grid ]; then
            want_grid tahoe || continue
            client="$TCLIENT"; spids=("${TSERVER_PIDS[@]}")
        else
            client="$LCLIENT"; spids=("${LAFS_PIDS[@]}")
        fi
        f="$WORK/l-$size.bin"; fresh_file "$f" "$n"
        s0=$(cpu_of "${spids[@]}")
        timed "$WORK/cap" "$LAFS" -d "$client" put "$f"
        s1=$(cpu_of "${spids[@]}")
        cap=$(tail -n 1 "$WORK/cap")
        row $grid lafs-put "$size" "$n" "$T_WALL" "$T_CPU" "$T_RSS_KB" "$(calc "$s1 - $s0")" "$T_SYS"
        s0=$(cpu_of "${spids[@]}")
        timed /dev/null "$LAFS" -d "$client" get "$cap" "$WORK/got"
        s1=$(cpu_of "${spids[@]}")
        cmp -s "$f" "$WORK/got" || die "lafs get of $size ($grid) returned other bytes"
        row $grid lafs-get "$size" "$n" "$T_WALL" "$T_CPU" "$T_RSS_KB" "$(calc "$s1 - $s0")" "$T_SYS"
        rm -f "$f" "$WORK/got"
    done
done

# ---- report -------------------------------------------------------------------------------
python3 - "$ROWS" "${SIZES[@]}" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
sizes = sys.argv[2:]
r = {(g, op, s): (int(n), float(w), float(c), rss, float(sc))
     for g, op, s, n, w, c, rss, sc, _ in rows}
sys_cpu = {(g, op, s): sy for g, op, s, n, w, c, rss, sc, sy in rows}
print("grid_vs_tahoe: %d servers, 3-of-5 (happy 5), loopback; MB/s with 1 MB = 10^6 bytes" % 5)
print("%-10s %-6s %-9s %8s %9s %9s %9s %9s %8s %8s" % (
    "grid", "size", "op", "wall s", "MB/s", "cpu s", "cpu ns/B", "srv cpu", "rss MiB", "sys s"))
print("(tahoe cpu = client node + `tahoe` command; lafs cpu, its sys part and rss = the `lafs`")
print(" process; sys includes the page faults of new memory and of the output file's pages;")
print(" srv cpu = seconds of the 5 storage server processes during the operation, 10 ms ticks)")
for s in sizes:
    for g, op in [("tahoe-grid", "tahoe-put"), ("tahoe-grid", "lafs-put"), ("lafs-grid", "lafs-put"),
                  ("tahoe-grid", "tahoe-get"), ("tahoe-grid", "lafs-get"), ("lafs-grid", "lafs-get")]:
        if (g, op, s) not in r:
            continue
        n, w, c, rss, sc = r[(g, op, s)]
        rss = "-" if rss == "-" else "%.1f" % (int(rss) / 1024)
        sy = sys_cpu[(g, op, s)]
        sy = "-" if sy == "-" else "%.3f" % float(sy)
        print("%-10s %-6s %-9s %8.3f %9.2f %9.3f %9.2f %9.2f %8s %8s" % (
            g, s, op, w, n / 1e6 / w, c, c * 1e9 / n, sc, rss, sy))
print()
if any(k[0] == "tahoe-grid" for k in r):
    print("ratios (speed: lafs MB/s / tahoe MB/s, lafs on the Tahoe grid, then lafs on the lafs"
          " grid; cpu: tahoe client cpu s / lafs client cpu s, same order):")
    for s in sizes:
        for op in ("put", "get"):
            n, wt, ct, _, _ = r[("tahoe-grid", "tahoe-" + op, s)]
            _, wl, cl, _, _ = r[("tahoe-grid", "lafs-" + op, s)]
            _, wg, cg, _, _ = r[("lafs-grid", "lafs-" + op, s)]
            print("  %-5s %s: speed x%.2f (x%.2f on the lafs grid), cpu x%.2f (x%.2f)" % (
                s, op, wt / wl, wt / wg, ct / max(cl, 1e-4), ct / max(cg, 1e-4)))
big = sizes[max(range(len(sizes)), key=lambda i: r[("lafs-grid", "lafs-get", sizes[i])][0])]
for g in ("tahoe-grid", "lafs-grid"):
    if (g, "lafs-get", big) in r:
        print("peak RSS of lafs get of %s (%s): %.1f MiB" % (big, g, int(r[(g, "lafs-get", big)][3]) / 1024))
EOF
