# benches/support/mount_bench.sh: helpers shared by the mount benchmarks (mount_perf.sh,
# mount_reread.sh), sourced after mount-tests/lib.sh has started the grid. Expects `$OUT` (the
# results directory) and the array `servers` (the storage servers' pids).

results="$OUT/results.txt"
: >"$results"
# report LABEL VALUE: one aligned line, printed and kept in $results.
report() { printf '%-44s %s\n' "$1" "$2" | tee -a "$results"; }
now() { date +%s.%N; }
# elapsed START: seconds since START, 3 decimals.
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
# The bytes all servers have written so far (sockets and files).
sent() {
    local p total=0 w
    for p in "${servers[@]}"; do
        w="$(awk '/^wchar:/ {print $2}' "/proc/$p/io")"
        total=$((total + w))
    done
    echo "$total"
}
