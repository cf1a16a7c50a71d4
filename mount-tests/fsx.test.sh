#!/usr/bin/env bash
# mount-tests/fsx.test.sh: fsx-style property test (mount-tests/fsx.py) of a real mount: random
# file and namespace operations applied to the mount and to a local reference directory, results
# compared after each operation, the whole tree after remounts (same cache; every other one
# after a kill -9 of the daemon instead of an unmount) and at the end after
# a remount with a FRESH cache (data from the grid only).
#
# Seeds: the fixed list FSX_SEEDS (default 1 2 3; set it empty to run FSX_SEED alone), plus
# FSX_SEED when set.
# FSX_OPS operations per seed (default 2000), FSX_REMOUNT_EVERY (default 400, 0: never).
# Mount options: FSX_MOUNT_OPTS for every seed, else the seeds take turns through $variants:
# uploads racing the test (short write-back delay), uploads at once with listings re-read
# every half second, and a small cache (back-pressure) with the default delay.
# Each seed gets its own fresh root directory, mount and reference directory.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"
lib_init fsx
command -v python3 >/dev/null || lib_skip "no python3"
lib_grid 3

seeds="${FSX_SEEDS-1 2 3} ${FSX_SEED:-}"
ops="${FSX_OPS:-2000}"
export LAFS client T FSX_LIB="$here/mount-tests/lib.sh"
variants=("write-back-delay=0.2" "write-back-delay=0,dir-refresh=0.5" "cache-size=400000")

n=0
for seed in $seeds; do
    opts="${FSX_MOUNT_OPTS-${variants[n++ % ${#variants[@]}]}}"
    # A root directory of its own for each seed: the tree starts empty on both sides.
    dir="$(timeout $T "$LAFS" -d "$client" mkdir)"
    [[ "$dir" == URI:DIR2* ]] || fail "lafs mkdir printed no directory cap"
    echo "tahoe: $dir" >"$client/private/aliases"
    mnt="$work/mnt$seed"
    mkdir -p "$work/local$seed"
    lib_mount "$mnt" "cache-dir=$work/cache$seed.0,$opts"
    say "seed $seed: $ops operations, mount options '$opts'"
    timeout 900 python3 "$here/mount-tests/fsx.py" --mount "$mnt" --local "$work/local$seed" \
        --cache "$work/cache$seed" --seed "$seed" --ops "$ops" \
        --remount-every "${FSX_REMOUNT_EVERY:-400}" \
        --mount-opts "$opts" || {
        say "tail of the mount daemon's log:"
        tail -n 40 "$client/logs/mount.log" 2>/dev/null || true
        fail "seed $seed (see above)"
    }
done
say "OK"
