#!/usr/bin/env bash
# mount-tests/pjdfstest.test.sh: the POSIX suite pjdfstest (0.2.2, the Rust rewrite) against a real
# mount, run as root at the mount root, mounted with `-o allow_other,default_permissions` (the
# kernel checks mode bits; the filesystem does the rest).
#
# Configuration: mount-tests/pjdfstest.toml (features enabled, dummy users, and the ONLY excluded
# cases, the hard-link ones, listed as pjdfstest "expected failures": link(2) is EPERM by design).
# Fails on any failure (an excluded case that passes is a failure too), prints the numbers
# executed / passed / skipped / excluded. Cases pjdfstest skips by itself (features the mount has
# not, the EROFS remount, a secondary filesystem) are counted as skipped.
#
# PJDFSTEST: the binary (default /root/.cache/lafs/pjdfstest/bin/pjdfstest, .ci/setup installs it).
# PJDFSTEST_FILTER: optional test-name patterns (for a quick run while fixing).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/mount-tests/lib.sh"

lib_init pjdfstest
PJDFSTEST="${PJDFSTEST:-/root/.cache/lafs/pjdfstest/bin/pjdfstest}"
[[ -x "$PJDFSTEST" ]] || lib_skip "no pjdfstest at $PJDFSTEST (.ci/setup installs it)"
[[ "$(id -u)" == 0 ]] || lib_skip "pjdfstest must run as root (it switches users)"
conf="$here/mount-tests/pjdfstest.toml"

lib_grid 3
# The dummy users must reach the mount by its absolute path: $work (0700 from mktemp) becomes
# traversable but not listable, and what holds secrets (the client's caps, the servers' keys)
# is closed to them.
chmod 0700 "$client" "$work"/server[0-9]*
chmod 0711 "$work"
mnt="$work/mnt"
# A directory on another filesystem, for the EXDEV cases.
mkdir -p "$work/secondary"
# The EROFS cases remount the mount read-only and back with `mount -o remount,ro|rw MNT`. mount(8)
# would hand a FUSE remount to the mount.fuse helper (which cannot remount); `mount -i` (no helper)
# makes the plain mount(2) MS_REMOUNT call, which FUSE supports.
mkdir -p "$work/bin"
printf '#!/bin/sh\nexec %s -i "$@"\n' "$(command -v mount)" >"$work/bin/mount"
chmod 0755 "$work/bin/mount"
lib_mount "$mnt" "allow_other,default_permissions"

out="$work/pjdfstest.out"
# shellcheck disable=SC2086
set +e
(cd "$mnt" && PATH="$work/bin:$PATH" NO_COLOR=1 timeout 900 "$PJDFSTEST" -c "$conf" -p "$mnt" -s "$work/secondary" ${PJDFSTEST_FILTER:-}) \
    >"$out" 2>&1
rc=$?
set -e
# Strip any colour codes before parsing.
sed -i 's/\x1b\[[0-9;]*m//g' "$out"

failed_cases="$(grep -E '(FAILED|PASSED UNEXPECTEDLY)$' "$out" | awk '{print $1}' || true)"
if [[ -n "$failed_cases" ]]; then
    say "failed cases:"
    # The failure messages follow each FAILED line (indented).
    grep -E -A3 '(FAILED|PASSED UNEXPECTEDLY)$' "$out" | head -200
fi

summary="$(grep -E '^Summary: ' "$out" | tail -1 || true)"
[[ -n "$summary" ]] || { tail -30 "$out"; fail "pjdfstest printed no summary (exit $rc)"; }
num() { sed -E "s/.* ([0-9]+) $1.*/\\1/" <<<"$summary"; }
nfail="$(num failed)"
nskip="$(num skipped)"
npass="$(num passed)"
nexcl="$(num 'expected failures')"
ntotal="$(num total)"
nexec=$((ntotal - nskip))
say "$nexec executed, $npass passed, $nfail failed, $nskip skipped, $nexcl excluded (hard links), $ntotal total"
excluded="$(grep -E 'failed as expected$' "$out" | awk '{print $1}' | tr '\n' ' ' || true)"
[[ -z "$excluded" ]] || say "excluded (hard links, failed as expected): $excluded"
if [[ -n "${PJDFSTEST_VERBOSE:-}" ]]; then grep -E 'skipped$' "$out" | awk '{print "  skipped: " $1}'; fi
[[ "$nfail" == 0 && "$rc" == 0 ]] || fail "$nfail pjdfstest cases failed (exit $rc)"

lib_umount "$mnt"
say "ok"
