#!/usr/bin/env bash
# packaging/macos/check-build.sh: compiles every Rust line of lafs (library, `lafs` binary with
# mount.lafs, tests, benches; all features) for macOS from a Linux machine, without a macOS SDK,
# and fails on any error or warning: `cargo clippy --target T --all-targets --all-features -- -D warnings`
# for T in x86_64-apple-darwin and aarch64-apple-darwin (or the targets given as arguments).
#
# A check links nothing, so the only C it needs is ring's (built by its build script with clang):
# stand-ins for the few SDK headers ring includes, and a pkg-config entry standing in for macFUSE's
# `fuse.pc` (fuser's build script asks for it), are written under ~/.cache/lafs/macos/check-stub. A real
# macOS build uses the SDK and macFUSE instead.
#
# The standard library for the target: when rustup has it (`rustup target add T`) it is used. Otherwise
# it is compiled from source (`-Zbuild-std`, allowed on a stable compiler by RUSTC_BOOTSTRAP=1, for this
# check only). The source must be the compiler's own version: rustup's `rust-src` component when present,
# else Debian's `rust-src` package of exactly that version (deb.debian.org keeps several in its suites),
# unpacked under ~/.cache/lafs/macos and joined to a copy of the toolchain (hard links) that rustup knows
# as `lafs-macos-VERSION`.
#
# Build products go to ${LAFS_MACOS_TARGET_DIR:-~/.cache/lafs/macos/target}, and those of --link to
# ${LAFS_MACOS_LINK_TARGET_DIR:-~/.cache/lafs/macos/target-link}, kept between runs (the dependencies for
# two targets take minutes to check, and more to build, from scratch).
#
# `--link` (first argument) also links the `lafs` binary (the one that is mount.lafs; dev profile, default
# features) for each target after its check, with zig as C compiler and linker through cargo-zigbuild (both
# from PyPI, pinned below, in a venv under ~/.cache/lafs/macos), and checks the Mach-O executable with
# macho-imports.py: architecture, deployment target (rustc's default for the target), the dylibs it loads,
# and that every undefined symbol is exported by the stub of the dylib it is bound to. Zig's own stub of
# libSystem stands in for the SDK. macFUSE's libfuse is a stub we write below (libfuse.tbd), listing only
# what fuser 0.18 calls on macOS; the `tor` feature is not linked (sysinfo, under arti, links the
# CoreFoundation and IOKit frameworks, which zig does not ship). Nothing is run. See README.md.
#
# Needs: clang and llvm-ar (`apt-get install clang`; installed here when missing and apt-get is usable);
# for --link also python3 with venv, and llvm-objdump and llvm-nm (`apt-get install llvm`).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
log() { printf '[macos-check] %s\n' "$*" >&2; }
die() { printf '[macos-check] ERROR: %s\n' "$*" >&2; exit 1; }

link=0
if [ "${1:-}" = "--link" ]; then
    link=1
    shift
fi
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(x86_64-apple-darwin aarch64-apple-darwin)

if ! command -v clang >/dev/null; then
    command -v apt-get >/dev/null || die "clang is needed (apt-get install clang)"
    log "apt-get install clang"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends clang llvm >/dev/null \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends clang llvm >/dev/null; }
fi
ar="$(command -v llvm-ar || ls /usr/bin/llvm-ar-* 2>/dev/null | head -n1 || true)"
[ -n "$ar" ] || die "llvm-ar is needed (apt-get install llvm)"
target_dir="${LAFS_MACOS_TARGET_DIR:-$HOME/.cache/lafs/macos/target}"
# The link has a target directory of its own: sharing the check's, each rebuilt std and every crate the
# other had built (measured: 6-7 minutes a target each way). The two set the target's C compiler, its
# flags and the deployment target differently, and build scripts (ring's among them) rerun on those.
link_target_dir="${LAFS_MACOS_LINK_TARGET_DIR:-$HOME/.cache/lafs/macos/target-link}"

# The stubs live at fixed paths, rewritten only when their text changes: build scripts (ring's, fuser's)
# rerun when the C flags or the pkg-config search path change, and a new path each run re-checked ring and
# every crate above it (measured: 3m27s and 2m26s for the two targets with nothing else changed).
put() {
    cat >"$1.new.$$"
    if cmp -s "$1.new.$$" "$1"; then rm "$1.new.$$"; else mv "$1.new.$$" "$1"; fi
}
stub="$HOME/.cache/lafs/macos/check-stub"
mkdir -p "$stub/pc"
printf '#define TARGET_OS_MAC 1\n#define TARGET_OS_OSX 1\n#define TARGET_OS_IPHONE 0\n' | put "$stub/TargetConditionals.h"
printf '#define assert(x) ((void)0)\n' | put "$stub/assert.h"
put "$stub/string.h" <<'H'
#include <stddef.h>
void *memcpy(void *, const void *, size_t);
void *memset(void *, int, size_t);
int memcmp(const void *, const void *, size_t);
void *memmove(void *, const void *, size_t);
H
# clang's own x86 intrinsic headers include <stdlib.h> (for _mm_malloc).
put "$stub/stdlib.h" <<'H'
#include <stddef.h>
void *malloc(size_t);
void free(void *);
int posix_memalign(void **, size_t, size_t);
void abort(void);
H
put "$stub/pc/fuse.pc" <<'PC'
Name: fuse
Description: stand-in for macFUSE's fuse.pc (cross check only, nothing is linked)
Version: 2.9.9
Libs: -lfuse
Cflags:
PC

zig_version=0.17.1
zigbuild_version=0.24.1
venv="$HOME/.cache/lafs/macos/venv"
linkstub="$HOME/.cache/lafs/macos/link-stub"
if [ "$link" = 1 ]; then
    command -v python3 >/dev/null || die "python3 is needed for --link"
    for t in llvm-objdump llvm-nm file; do
        command -v "$t" >/dev/null || ls /usr/bin/"$t"-* >/dev/null 2>&1 || die "$t is needed (apt-get install llvm)"
    done
    if [ "$("$venv/bin/python3" -m pip list 2>/dev/null | awk '$1 == "ziglang" || $1 == "cargo-zigbuild" { printf "%s=%s ", $1, $2 }')" \
        != "cargo-zigbuild=$zigbuild_version ziglang=$zig_version " ]; then
        log "pip install ziglang==$zig_version cargo-zigbuild==$zigbuild_version (in $venv)"
        python3 -m venv "$venv"
        "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
            "ziglang==$zig_version" "cargo-zigbuild==$zigbuild_version"
    fi
    mkdir -p "$linkstub/pc"
    # A text-based stub of macFUSE's libfuse 2 (at the path macFUSE installs it to, not checked here). It exports only the
    # one function fuser 0.18 declares for macOS (src/mnt/fuse2_sys.rs: the mount; unmounting goes through
    # unmount(2)), so the link proves fuser asks for nothing else, not that macFUSE provides it.
    put "$linkstub/libfuse.tbd" <<'TBD'
--- !tapi-tbd
tbd-version:     4
targets:         [ x86_64-macos, arm64-macos ]
install-name:    '/usr/local/lib/libfuse.2.dylib'
exports:
  - targets:         [ x86_64-macos, arm64-macos ]
    symbols:         [ _fuse_mount_compat25 ]
...
TBD
    put "$linkstub/pc/fuse.pc" <<PC
Name: fuse
Description: stand-in for macFUSE's fuse.pc (cross link only: libfuse.tbd is a stub)
Version: 2.9.9
Libs: -L$linkstub -lfuse
Cflags:
PC
fi

# Links the lafs binary for $1 with the toolchain and std settings of its check, then inspects it.
link_one() {
    local t="$1" arch min_os tc=()
    case "$t" in
        x86_64-*) arch=x86_64 ;;
        aarch64-*) arch=arm64 ;;
        *) die "no Mach-O architecture known for $t" ;;
    esac
    [ "${#toolchain[@]}" -gt 0 ] && tc=("RUSTUP_TOOLCHAIN=${toolchain[0]#+}")
    # rustc's own default, set for zig too: left alone, zig stamps the binary with its newest macOS.
    min_os="$(env "${tc[@]}" rustc --print deployment-target --target "$t" | sed -n 's/^MACOSX_DEPLOYMENT_TARGET=//p')"
    [ -n "$min_os" ] || die "rustc gave no deployment target for $t"
    log "cargo zigbuild --target $t --bin lafs ${build_std[*]} (MACOSX_DEPLOYMENT_TARGET=$min_os)"
    env "${tc[@]}" PATH="$venv/bin:$PATH" MACOSX_DEPLOYMENT_TARGET="$min_os" \
        PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH="$linkstub/pc" PKG_CONFIG_LIBDIR="$linkstub/pc" \
        CARGO_TARGET_DIR="$link_target_dir" \
        cargo zigbuild "${build_std[@]}" --target "$t" --bin lafs
    local bin="$link_target_dir/$t/debug/lafs"
    file "$bin" >&2
    local zig_libsystem zigbuild_deps
    zig_libsystem="$("$venv/bin/python3" -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')/lib/libc/darwin/libSystem.tbd"
    zigbuild_deps="$HOME/.cache/cargo-zigbuild/$zigbuild_version/deps"
    python3 "$here/packaging/macos/macho-imports.py" "$bin" "$arch" "$min_os" \
        "$zig_libsystem" "$zigbuild_deps/libiconv.tbd" "$zigbuild_deps/libcharset.1.tbd" "$linkstub/libfuse.tbd" >&2
}

cd "$here"
version="$(rustc --version | awk '{print $2}')"
sysroot="$(rustc --print sysroot)"
toolchain=()
build_std=()

# A toolchain whose sysroot holds the library source for -Zbuild-std (prints its rustup name).
toolchain_with_source() {
    if [ -d "$sysroot/lib/rustlib/src/rust/library/std" ]; then
        return 0
    fi
    local cache="$HOME/.cache/lafs/macos"
    local src="$cache/rust-src-$version"
    local tc="$cache/toolchain-$version"
    local name="lafs-macos-$version"
    if [ ! -d "$src/library/std" ]; then
        command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to unpack Debian's rust-src"
        log "looking for Debian's rust-src $version"
        local suite file=""
        for suite in trixie-backports forky sid experimental trixie bookworm-backports; do
            file="$(curl -fsS "http://deb.debian.org/debian/dists/$suite/main/binary-all/Packages.xz" 2>/dev/null \
                | xz -dc 2>/dev/null \
                | awk -v v="$version" '
                    /^Package: /  { p = ($2 == "rust-src"); ok = 0 }
                    p && /^Version: / { split($2, a, "+"); ok = (a[1] == v) }
                    p && ok && /^Filename: / { print $2; exit }')" || true
            [ -n "$file" ] && break
        done
        [ -n "$file" ] || die "no Debian rust-src package of version $version found (rustup target add instead)"
        log "fetching $file"
        local tmp
        tmp="$(mktemp -d)"
        curl -fsS -o "$tmp/rust-src.deb" "http://deb.debian.org/debian/$file"
        dpkg-deb -x "$tmp/rust-src.deb" "$tmp/x"
        local lib
        lib="$(ls -d "$tmp"/x/usr/src/rustc-*/library 2>/dev/null | head -n1)"
        [ -n "$lib" ] || die "the package has no library/ source"
        mkdir -p "$cache"
        rm -rf "$src"
        mv "$(dirname "$lib")" "$src"
        rm -rf "$tmp"
    fi
    if [ ! -e "$tc/lib/rustlib/src/rust" ]; then
        rm -rf "$tc"
        mkdir -p "$cache"
        cp -al "$sysroot" "$tc" 2>/dev/null || cp -a "$sysroot" "$tc"
        mkdir -p "$tc/lib/rustlib/src"
        ln -s "$src" "$tc/lib/rustlib/src/rust"
    fi
    rustup toolchain link "$name" "$tc" >/dev/null
    printf '%s\n' "$name"
}

for t in "${targets[@]}"; do
    tu="${t//-/_}"
    if [ -d "$(rustc --print target-libdir --target "$t" 2>/dev/null)" ] &&
        ls "$(rustc --print target-libdir --target "$t")"/libstd-* >/dev/null 2>&1; then
        toolchain=()
        build_std=()
    else
        name="$(toolchain_with_source)"
        [ -n "$name" ] && toolchain=("+$name") || toolchain=()
        build_std=(-Zbuild-std=std,panic_abort)
        export RUSTC_BOOTSTRAP=1
    fi
    log "cargo clippy --target $t ${build_std[*]}"
    env PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH="$stub/pc" PKG_CONFIG_LIBDIR="$stub/pc" \
        "CC_$tu=clang" "AR_$tu=$ar" "CFLAGS_$tu=-ffreestanding -nostdlibinc -I$stub" \
        CARGO_TARGET_DIR="$target_dir" \
        cargo "${toolchain[@]}" clippy "${build_std[@]}" --target "$t" --all-targets --all-features \
        -- -D warnings
    [ "$link" = 0 ] || link_one "$t"
done
[ "$link" = 0 ] && log "ok: ${targets[*]}" || log "ok (checked and linked): ${targets[*]}"
