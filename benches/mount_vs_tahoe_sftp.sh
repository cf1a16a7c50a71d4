#!/usr/bin/env bash
# benches/mount_vs_tahoe_sftp.sh: the figures of benches/mount_perf.sh, taken through Tahoe's own
# SFTP frontend mounted with sshfs, for a side-by-side with `lafs mount` (a benchmark script: it
# prints numbers and asserts nothing about them).
#
# STATUS: run end to end once with FILES=50 SIZE_MIB=16 (a quick check, on a loaded machine:
# rsync 46 s, its no-op rerun 46 s). Not yet run at full size. Every step is bounded.
#
# Prerequisites: sshfs (`apt-get install sshfs`), ssh-keygen, rsync, Tahoe 1.20 in
# $LAFS_TAHOE_VENV (default ~/.cache/lafs/tahoe-venv, made by .ci/setup).
#
# What it does:
#   1. A loopback Tahoe grid of 3 storage servers and one client (2-of-4... as mount_perf.sh:
#      needed 2, happy 3, total 4) with tests/interop/tahoe_grid.py (`create`, then the client's
#      tahoe.cfg gets an [sftpd] section, then `start --detach`; `down` on exit).
#   2. A root directory (`tahoe mkdir`), an SSH user key and host key, an accounts file
#      `bench ssh-ed25519 AAAA... ROOTCAP` (Tahoe's key-based SFTP accounts).
#   3. `sshfs -p PORT bench@127.0.0.1:/ MNT` with the key, then the same steps as mount_perf.sh:
#      rsync -a of the same generated tree (FILES/DIRS), the no-op rerun, SIZE_MIB MiB dd in
#      (+ sync), remount, dd out.
# Knobs: FILES (1000), DIRS (FILES/20), SIZE_MIB (1024), T (per-step timeout, 900).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
T="${T:-900}"
VENV="${LAFS_TAHOE_VENV:-$HOME/.cache/lafs/tahoe-venv}"
TAHOE="$VENV/bin/tahoe"
FILES="${FILES:-1000}"
DIRS="${DIRS:-$((FILES / 20))}"
SIZE_MIB="${SIZE_MIB:-1024}"

die() { echo "mount_vs_tahoe_sftp: $*" >&2; exit 1; }
say() { echo "mount_vs_tahoe_sftp: $*"; }
[[ -x "$TAHOE" ]] || die "no tahoe at $TAHOE"
command -v sshfs >/dev/null || die "no sshfs (apt-get install sshfs)"
command -v rsync >/dev/null || die "no rsync"

work="$(mktemp -d /tmp/lafs-sftp-bench.XXXXXX)"
grid="$work/grid"
mnt="$work/mnt"
cleanup() {
    set +e
    if mountpoint -q "$mnt" 2>/dev/null; then timeout 20 fusermount3 -u "$mnt" || timeout 10 fusermount -u "$mnt"; fi
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

sshfs_mount
# Tahoe's SFTP frontend refuses symlinks (EOPNOTSUPP): rsync reports them and exits 23.
rsync_ok() { local rc=0; timeout "$T" rsync -a "$src/" "$mnt/tree/" 2>"$work/rsync.err" || rc=$?; [[ $rc == 0 || $rc == 23 ]]; }
t0="$(now)"; rsync_ok || die "rsync"
report "sftp: rsync -a ($FILES files)" "$(elapsed "$t0") s ($(grep -c 'failed: Operation not supported' "$work/rsync.err" || true) symlinks refused)"
t0="$(now)"; rsync_ok || die "rsync rerun"
report "sftp: rsync -a rerun (no-op)" "$(elapsed "$t0") s"
timeout "$T" dd if=/dev/urandom of="$work/big" bs=1M count="$SIZE_MIB" status=none
t0="$(now)"; timeout "$T" dd if="$work/big" of="$mnt/big" bs=1M conv=fsync status=none || die "dd in"
report "sftp: write $SIZE_MIB MiB (dd conv=fsync)" "$(elapsed "$t0") s"
timeout 60 fusermount3 -u "$mnt" || timeout 60 fusermount -u "$mnt"
sshfs_mount
t0="$(now)"; timeout "$T" dd if="$mnt/big" of=/dev/null bs=1M status=none || die "dd out"
report "sftp: read $SIZE_MIB MiB" "$(elapsed "$t0") s"
timeout "$T" cmp "$work/big" "$mnt/big" || die "the file read back differs"
