#!/usr/bin/env bash
# packaging/macos/check-build.sh: type-checks the `lafs` binary (with mount.lafs) for macOS from a
# Linux machine, without a macOS SDK: `cargo check --target x86_64-apple-darwin`.
#
# A check compiles every Rust line for the target but links nothing, so the only C it needs is
# ring's (built by its build script with clang); stand-ins for the three SDK headers ring includes
# and a pkg-config entry standing in for macFUSE's `fuse.pc` (fuser's build script asks for it)
# are generated in a temporary directory. A real macOS build uses the SDK and macFUSE instead.
#
# Needs: rustup target add x86_64-apple-darwin; clang and llvm-ar (apt-get install clang llvm).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
stub="$(mktemp -d)"
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/pc"
printf '#define TARGET_OS_MAC 1\n#define TARGET_OS_OSX 1\n#define TARGET_OS_IPHONE 0\n' >"$stub/TargetConditionals.h"
printf '#define assert(x) ((void)0)\n' >"$stub/assert.h"
cat >"$stub/string.h" <<'H'
#include <stddef.h>
void *memcpy(void *, const void *, size_t);
void *memset(void *, int, size_t);
int memcmp(const void *, const void *, size_t);
void *memmove(void *, const void *, size_t);
H
cat >"$stub/pc/fuse.pc" <<'PC'
Name: fuse
Description: stand-in for macFUSE's fuse.pc (cross check only, nothing is linked)
Version: 2.9.9
Libs: -lfuse
Cflags:
PC
ar="$(command -v llvm-ar || ls /usr/bin/llvm-ar-* 2>/dev/null | head -n1)"
cd "$here"
PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH="$stub/pc" PKG_CONFIG_LIBDIR="$stub/pc" \
    CC_x86_64_apple_darwin=clang AR_x86_64_apple_darwin="$ar" \
    CFLAGS_x86_64_apple_darwin="-ffreestanding -nostdlibinc -I$stub" \
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}/macos-check" \
    cargo check --target x86_64-apple-darwin --bin lafs "$@"
