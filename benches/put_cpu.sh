#!/usr/bin/env bash
# put_cpu.sh — client CPU per byte and peak RSS of `lafs put` on a loopback grid of 5 `lafs run`
# storage servers (3-of-5, happy 5). A benchmark script, not a test: it prints figures.
#
# Usage: benches/put_cpu.sh LAFS_BIN [LAFS_BIN...]
#
# Each round runs every given binary once per size, interleaved (A B A B ...), each on a FRESH
# random file (a re-put of the same file would find its shares placed and write nothing), so
# that old and new binaries see the same machine load. The servers run the first binary.
# Reported per put: user and sys CPU seconds and peak RSS of the `lafs put` process (GNU time),
# (user+sys) ns per plaintext byte and minor page faults; then min-max per binary and size, and the load average.
#
# Environment: SIZES (default "64M 256M", binary units), ROUNDS (default 3), BENCH_CMD_TIMEOUT
# (seconds per put, default 600), PERF=1 records `perf record -g` of the last binary's last put
# of each size into the work directory, BENCH_KEEP=1 keeps the work directory.
#
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 LAFS_BIN [LAFS_BIN...]" >&2; exit 2; }
BINS=("$@")
for b in "${BINS[@]}"; do [ -x "$b" ] || { echo "put_cpu: no binary $b" >&2; exit 2; }; done
read -r -a SIZES <<<"${SIZES:-64M 256M}"
ROUNDS="${ROUNDS:-3}"
CMD_TIMEOUT="${BENCH_CMD_TIMEOUT:-600}"
SERVERS=5
GNUTIME=/usr/bin/time
[ -x "$GNUTIME" ] || { echo "put_cpu: $GNUTIME (GNU time) is needed" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/put_cpu.XXXXXX")"
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

bytes_of() {
    python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r"(\d+)([KMG]?)", sys.argv[1], re.I)
if not m:
    sys.exit("bad size %r" % sys.argv[1])
print(int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()])
PY
}

SRV="${BINS[0]}"
PORTS=$(python3 - "$SERVERS" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
i=0
for port in $PORTS; do
    timeout 120 "$SRV" create-node --storage "--port=tcp:$port:interface=127.0.0.1" \
        "--location=tcp:127.0.0.1:$port" "--nickname=server$i" --webport=none \
        --reserved-space=0 "$WORK/server$i" >"$WORK/create$i.log" 2>&1
    "$SRV" run "$WORK/server$i" </dev/null >"$WORK/server$i.out" 2>"$WORK/server$i.err" &
    PIDS+=($!)
    i=$((i + 1))
done
for i in $(seq 0 $((SERVERS - 1))); do
    deadline=$(( $(date +%s) + 60 ))
    until grep -qx ready "$WORK/server$i.out" 2>/dev/null; do
        kill -0 "${PIDS[$i]}" 2>/dev/null || { cat "$WORK/server$i.err" >&2; exit 1; }
        [ "$(date +%s)" -lt "$deadline" ] || { echo "server$i not ready" >&2; exit 1; }
        sleep 0.1
    done
done
CLIENT="$WORK/client"
mkdir -p "$CLIENT/private"
printf '[node]\nnickname = bench\n\n[client]\nshares.needed = 3\nshares.happy = 5\nshares.total = 5\n\n[storage]\nenabled = false\n' >"$CLIENT/tahoe.cfg"
for i in $(seq 0 $((SERVERS - 1))); do
    timeout 60 "$SRV" announcement "$WORK/server$i" >"$WORK/ann$i.json"
done
# Each announcement is a servers.yaml of one server (JSON is YAML): merge them.
python3 - "$CLIENT/private/servers.yaml" "$WORK"/ann*.json <<'PY'
import json, sys
storage = {}
for path in sys.argv[2:]:
    storage.update(json.load(open(path))["storage"])
json.dump({"storage": storage}, open(sys.argv[1], "w"))
PY

ROWS="$WORK/rows"
: >"$ROWS"
LOADS=()
for r in $(seq "$ROUNDS"); do
    for size in "${SIZES[@]}"; do
        n=$(bytes_of "$size")
        for bi in "${!BINS[@]}"; do
            b="${BINS[$bi]}"
            f="$WORK/in.bin"
            head -c "$n" /dev/urandom >"$f"
            pre=()
            if [ "${PERF:-0}" = 1 ] && [ "$bi" -eq $((${#BINS[@]} - 1)) ] && [ "$r" -eq "$ROUNDS" ]; then
                pre=(/usr/bin/perf record -g -o "$WORK/perf-$size.data" --)
            fi
            timeout "$CMD_TIMEOUT" "$GNUTIME" -f '%U %S %M %e %R' -o "$WORK/time" \
                "${pre[@]}" "$b" -d "$CLIENT" put "$f" >"$WORK/cap" 2>"$WORK/err" \
                || { cat "$WORK/err" >&2; exit 1; }
            read -r u s m e f <"$WORK/time"
            echo "$bi $size $n $u $s $m $e $f" >>"$ROWS"
            rm -f "$f"
        done
    done
    LOADS+=("$(cut -d' ' -f1-3 /proc/loadavg)")
done
python3 - "$ROWS" "${BINS[@]}" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
bins = sys.argv[2:]
print("%-3s %-6s %7s %7s %8s %8s %7s %8s" % ("bin", "size", "user s", "sys s", "ns/B", "rss MiB", "wall s", "minflt"))
agg = {}
for bi, size, n, u, s, m, e, f in rows:
    nsb = (float(u) + float(s)) * 1e9 / int(n)
    agg.setdefault((int(bi), size), []).append((nsb, int(m) / 1024))
    print("%-3s %-6s %7.2f %7.2f %8.2f %8.1f %7.2f %8s" % (bi, size, float(u), float(s), nsb, int(m) / 1024, float(e), f))
print("summary (min-max over rounds):")
for (bi, size), v in sorted(agg.items()):
    ns = [x[0] for x in v]; rss = [x[1] for x in v]
    print("  %s %-6s ns/B %.2f-%.2f  rss MiB %.1f-%.1f  (%s)" % (bi, size, min(ns), max(ns), min(rss), max(rss), bins[bi]))
PY
(IFS=","; echo "load average (1, 5, 15 min) after each round: ${LOADS[*]}")
[ "${PERF:-0}" = 1 ] && { BENCH_KEEP=1; echo "perf data in $WORK"; }
exit 0
