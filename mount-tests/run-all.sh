#!/usr/bin/env bash
# mount-tests/run-all.sh: runs every mount-tests/*.test.sh (sorted), each on its own grid and
# mount, one after another (they are heavy: real servers, real FUSE mounts). Runs them all even
# after a failure, prints one line per script with its time, exits 1 if any failed.
# A filter argument runs only the scripts whose name contains it.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
failed=()
for t in "$here"/*.test.sh; do
    name="$(basename "$t" .test.sh)"
    [[ -n "${1:-}" && "$name" != *"$1"* ]] && continue
    start=$SECONDS
    echo "=== mount-tests: $name"
    if bash "$t"; then
        echo "=== mount-tests: $name ok ($((SECONDS - start)) s)"
    else
        echo "=== mount-tests: $name FAILED ($((SECONDS - start)) s)"
        failed+=("$name")
    fi
done
if ((${#failed[@]})); then
    echo "mount-tests: failed: ${failed[*]}" >&2
    exit 1
fi
echo "mount-tests: all passed"
