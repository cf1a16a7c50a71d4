#!/usr/bin/env bash
# benches/mount_vs_tahoe_sftp.sh: `lafs mount` and Tahoe's own SFTP frontend mounted with sshfs,
# side by side in one run on the same loopback grid of tahoe-lafs 1.20 storage servers (a
# benchmark script: it prints numbers and asserts nothing about them). Every step is bounded.
#
# Prerequisites: sshfs (`apt-get install sshfs`), ssh-keygen, rsync, fuse3, Tahoe 1.20 in
# $LAFS_TAHOE_VENV (default ~/.cache/lafs/tahoe-venv, made by .ci/setup), a built lafs.
#
# What it does:
#   1. A loopback Tahoe grid of 3 storage servers and one Tahoe client (needed 2, happy 3,
#      total 4, as mount_perf.sh) with tests/interop/tahoe_grid.py (`create`, then the
#      client's tahoe.cfg gets an [sftpd] section, then `start --detach`; `down` on exit).
#   2. A root directory (`tahoe mkdir`), an SSH user key and host key, an accounts file
#      `bench ssh-ed25519 AAAA... ROOTCAP` (Tahoe's key-based SFTP accounts).
#   3. lafs: `lafs mount` of the same root cap with the Tahoe client's node directory as it is,
#      plus a private/servers.yaml made from its introducer cache (lafs has no introducer
#      client): both store on the same Tahoe servers. rsync -a of the generated tree (the
#      generator of mount_perf.sh, same seed) into ROOT/lafs-tree, the no-op rerun, `sync` of
#      the tree (until the grid has it), SIZE_MIB MiB dd in + sync, a remount with a fresh
#      cache, dd out, and the daemon's peak RSS.
#   4. Tahoe: `sshfs -p PORT bench@127.0.0.1:/ MNT`, then the same steps into ROOT/tree (SFTP
#      writes are synchronous: a file is on the grid when its close returns).
# Knobs: FILES (1000), DIRS (FILES/20), SIZE_MIB (1024), T (per-step timeout, 900),
# SFTP_FILES (default FILES: the SFTP side copies its own tree of that many files, made by the
# same generator; Tahoe's SFTP frontend spends seconds per file, so 1,000 files take over an
# hour there: a smaller SFTP_FILES keeps the run bounded, and both sides report s/file),
# LAFS (default target/release/lafs), SKIP_SFTP=1, SKIP_LAFS=1, KEEP=1 (keep the work dir).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
T="${T:-900}"
VENV="${LAFS_TAHOE_VENV:-$HOME/.cache/lafs/tahoe-venv}"
TAHOE="$VENV/bin/tahoe"
FILES="${FILES:-1000}"
DIRS="${DIRS:-$((FILES / 20))}"
SFTP_FILES="${SFTP_FILES:-$FILES}"
SIZE_MIB="${SIZE_MIB:-1024}"
LAFS="${LAFS:-$here/target/release/lafs}"

die() { echo "mount_vs_tahoe_sftp: $*" >&2; exit 1; }
say() { echo "mount_vs_tahoe_sftp: $*"; }
[[ -x "$TAHOE" ]] || die "no tahoe at $TAHOE"
command -v sshfs >/dev/null || die "no sshfs (apt-get install sshfs)"
command -v rsync >/dev/null || die "no rsync"
[[ -n "${SKIP_LAFS:-}" || -x "$LAFS" ]] || die "no lafs binary at $LAFS (set LAFS)"

work="$(mktemp -d /tmp/lafs-sftp-bench.XXXXXX)"
grid="$work/grid"
mnt="$work/mnt"
lmnt="$work/lmnt"
cleanup() {
    set +e
    if mountpoint -q "$mnt" 2>/dev/null; then timeout 20 fusermount3 -u "$mnt" || timeout 10 fusermount -u "$mnt"; fi
    if mountpoint -q "$lmnt" 2>/dev/null; then timeout 150 "$LAFS" umount "$lmnt"; fi
    timeout 60 python3 "$here/tests/interop/tahoe_grid.py" down --dir "$grid" >/dev/null 2>&1
    [[ -n "${KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
report() { printf '%-44s %s\n' "$1" "$2"; }

say "creating a Tahoe grid in $grid"
timeout "$T" python3 "$here/tests/interop/tahoe_grid.py" create --dir "$grid" --servers 3 \
    --needed 2 --happy 3 --total 4 >/dev/null || die "tahoe_grid.py create"
client="$grid/client"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
ssh-keygen -q -t rsa -b 2048 -N '' -f "$client/private/ssh_host_rsa_key" || die "host key"
ssh-keygen -q -t ed25519 -N '' -f "$work/user_key" || die "user key"
cat >>"$client/tahoe.cfg" <<CFG

[sftpd]
enabled = true
port = tcp:$port:interface=127.0.0.1
host_pubkey_file = private/ssh_host_rsa_key.pub
host_privkey_file = private/ssh_host_rsa_key
accounts.file = private/accounts
CFG
# The accounts file needs the root cap, which needs a running client: start, mkdir, then
# restart so sftpd reads the accounts.
: >"$client/private/accounts"
timeout "$T" python3 "$here/tests/interop/tahoe_grid.py" start --dir "$grid" --detach >/dev/null \
    || die "tahoe_grid.py start"
root="$(timeout "$T" "$TAHOE" -d "$client" mkdir)" || die "tahoe mkdir"
echo "bench $(cut -d' ' -f1,2 "$work/user_key.pub") $root" >"$client/private/accounts"
timeout "$T" python3 "$here/tests/interop/tahoe_grid.py" down --dir "$grid" >/dev/null
timeout "$T" python3 "$here/tests/interop/tahoe_grid.py" start --dir "$grid" --detach >/dev/null \
    || die "tahoe_grid.py restart"

sshfs_mount() {
    mkdir -p "$mnt"
    timeout 60 sshfs -p "$port" -o "IdentityFile=$work/user_key,StrictHostKeyChecking=no" \
        -o UserKnownHostsFile=/dev/null -o reconnect "bench@127.0.0.1:/" "$mnt" \
        || die "sshfs mount"
    mountpoint -q "$mnt" || die "sshfs: not mounted"
}

say "generating the tree ($FILES files, $DIRS dirs) as mount_perf.sh does"
src="$work/src"
# The generator is mount_perf.sh's (same seed, so the same tree).
sed -n "/^python3 - \"\$src\" \"\$FILES\" \"\$DIRS\" <<'PY'$/,/^PY$/p" "$here/benches/mount_perf.sh" \
    | sed '1d;$d' >"$work/gen.py"
python3 "$work/gen.py" "$src" "$FILES" "$DIRS"
if [[ "$SFTP_FILES" != "$FILES" ]]; then
    ssrc="$work/src-sftp"
    python3 "$work/gen.py" "$ssrc" "$SFTP_FILES" "$((SFTP_FILES / 20))"
else
    ssrc="$src"
fi
# per_file SECONDS N: seconds per file, 3 decimals.
per_file() { python3 -c "import sys; print(f'{float(sys.argv[1]) / int(sys.argv[2]):.3f}')" "$1" "$2"; }


# ---- lafs mount on the same grid ------------------------------------------------------------
if [[ -z "${SKIP_LAFS:-}" ]]; then
    "$VENV/bin/python" "$here/benches/support/servers_yaml_from_cache.py" "$client/private" 3 \
        || die "could not build servers.yaml"
    daemon_pid() { pgrep -n -f -- "mount --foreground .* $1 " || true; }
    peak_rss() {
        local pid; pid="$(daemon_pid "$1")"
        [[ -n "$pid" ]] || { echo "?"; return; }
        awk '/^VmHWM/ {printf "%.1f MiB\n", $2 / 1024}' "/proc/$pid/status"
    }
    lafs_mount() {
        mkdir -p "$lmnt"
        timeout 120 "$LAFS" -d "$client" mount "$root" "$lmnt" -o "cache-dir=$1" || die "lafs mount"
        mountpoint -q "$lmnt" || die "lafs: not mounted"
    }
    lafs_mount "$work/lcache1"
    t0="$(now)"; timeout "$T" rsync -a "$src/" "$lmnt/lafs-tree/" || die "lafs: rsync"
    e="$(elapsed "$t0")"; report "lafs: rsync -a ($FILES files)" "$e s ($(per_file "$e" "$FILES") s/file)"
    t0="$(now)"; timeout "$T" rsync -a "$src/" "$lmnt/lafs-tree/" || die "lafs: rsync rerun"
    e="$(elapsed "$t0")"; report "lafs: rsync -a rerun (no-op)" "$e s ($(per_file "$e" "$FILES") s/file)"
    t0="$(now)"
    timeout "$T" find "$lmnt/lafs-tree" -type d -exec sync {} + || die "lafs: sync of the tree"
    report "lafs: sync of the tree (grid has it)" "$(elapsed "$t0") s"
    timeout "$T" dd if=/dev/urandom of="$work/lbig" bs=1M count="$SIZE_MIB" status=none
    t0="$(now)"; timeout "$T" dd if="$work/lbig" of="$lmnt/lafs-big" bs=1M status=none || die "lafs: dd in"
    timeout "$T" sync "$lmnt/lafs-big" || die "lafs: sync big"
    report "lafs: write $SIZE_MIB MiB (dd + sync)" "$(elapsed "$t0") s"
    report "lafs: daemon peak RSS" "$(peak_rss "$lmnt")"
    timeout 150 "$LAFS" umount "$lmnt" || die "lafs umount"
    lafs_mount "$work/lcache2"
    t0="$(now)"; timeout "$T" dd if="$lmnt/lafs-big" of=/dev/null bs=1M status=none || die "lafs: dd out"
    report "lafs: read $SIZE_MIB MiB, fresh cache" "$(elapsed "$t0") s"
    timeout "$T" cmp "$work/lbig" "$lmnt/lafs-big" || die "lafs: the file read back differs"
    timeout "$T" diff -r --no-dereference "$src" "$lmnt/lafs-tree" >/dev/null || die "lafs: the tree read back differs"
    report "lafs: daemon peak RSS (after the read)" "$(peak_rss "$lmnt")"
    timeout 150 "$LAFS" umount "$lmnt" || die "lafs umount"
    rm -f "$work/lbig"
fi
[[ -z "${SKIP_SFTP:-}" ]] || exit 0

sshfs_mount
# Tahoe's SFTP frontend refuses symlinks (EOPNOTSUPP): rsync reports them and exits 23.
rsync_ok() { local rc=0; timeout "$T" rsync -a "$ssrc/" "$mnt/tree/" 2>"$work/rsync.err" || rc=$?; [[ $rc == 0 || $rc == 23 ]]; }
t0="$(now)"
if ! rsync_ok; then
    # A timed-out copy is a result too: how far it got.
    report "sftp: rsync -a ($SFTP_FILES files) STOPPED" "after $(elapsed "$t0") s (timeout $T s): $(find "$mnt/tree" -type f 2>/dev/null | wc -l) files arrived"
    exit 0
fi
e="$(elapsed "$t0")"
report "sftp: rsync -a ($SFTP_FILES files)" "$e s ($(per_file "$e" "$SFTP_FILES") s/file; $(grep -c 'failed: Operation not supported' "$work/rsync.err" || true) symlinks refused)"
t0="$(now)"; rsync_ok || die "rsync rerun"
e="$(elapsed "$t0")"; report "sftp: rsync -a rerun (no-op)" "$e s ($(per_file "$e" "$SFTP_FILES") s/file)"
timeout "$T" dd if=/dev/urandom of="$work/big" bs=1M count="$SIZE_MIB" status=none
t0="$(now)"; timeout "$T" dd if="$work/big" of="$mnt/big" bs=1M conv=fsync status=none || die "dd in"
report "sftp: write $SIZE_MIB MiB (dd conv=fsync)" "$(elapsed "$t0") s"
timeout 60 fusermount3 -u "$mnt" || timeout 60 fusermount -u "$mnt"
sshfs_mount
t0="$(now)"; timeout "$T" dd if="$mnt/big" of=/dev/null bs=1M status=none || die "dd out"
report "sftp: read $SIZE_MIB MiB" "$(elapsed "$t0") s"
timeout "$T" cmp "$work/big" "$mnt/big" || die "the file read back differs"
