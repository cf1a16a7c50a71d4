#!/usr/bin/env python3
"""Checks what a linked Mach-O executable imports against the text-based stubs (.tbd) it was linked with.

Usage: macho-imports.py BINARY ARCH MIN_OS TBD...

ARCH is the tbd architecture (x86_64 or arm64), MIN_OS the deployment target the binary must carry
(LC_BUILD_VERSION minos, or LC_VERSION_MIN_MACOSX version). Prints the dylibs the binary loads and, per dylib, how many symbols it takes from
it (naming those taken from stubs we wrote ourselves). Exits non-zero when:
- the file is not a Mach-O executable of ARCH, or its minos differs from MIN_OS;
- ARCH is arm64 and the file has no code signature load command;
- it loads a dylib or framework that none of the given TBD files describes;
- an undefined symbol is bound to no dylib (flat or dynamic lookup), or to a dylib whose stub (the dylib's
  own exports plus those of the libraries it re-exports) does not export it for ARCH.

Reads `llvm-objdump --macho` and `llvm-nm -m` output; the tbd parser covers tbd-version 4 as written by
Apple's tools and zig (flow sequences `[a, b]` that may span lines; only `exports` and `reexports` count).
"""

import re
import subprocess
import sys


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def tool(name):
    for cand in (name, name + "-14", name + "-15", name + "-16", name + "-17", name + "-18", name + "-19"):
        try:
            subprocess.run([cand, "--version"], check=True, capture_output=True)
            return cand
        except (OSError, subprocess.CalledProcessError):
            continue
    sys.exit(f"{name} not found (apt-get install llvm)")


def flow_items(text):
    return [x.strip().strip("'\"") for x in text.split(",") if x.strip()]


def parse_tbd(path):
    """Returns {install_name: (reexported_libraries, {arch: set(symbols)})} for each document."""
    docs = {}
    raw = open(path, encoding="utf-8").read()
    for doc in re.split(r"^--- !tapi-tbd.*$", raw, flags=re.M):
        # Join flow sequences that span lines, so that each `key: [ ... ]` is one line.
        joined = re.sub(r"\[[^\]]*\]", lambda m: m.group(0).replace("\n", " "), doc)
        install = None
        reexported = []
        exports = {}
        section = None
        targets = []
        for line in joined.splitlines():
            top = re.match(r"^([a-z-]+):\s*(.*)$", line)
            if top:
                section = top.group(1)
                if section == "install-name":
                    install = top.group(2).strip().strip("'\"")
                continue
            item = re.match(r"^\s*-?\s*([a-z-]+):\s*\[(.*)\]\s*$", line)
            if not item:
                continue
            key, value = item.group(1), flow_items(item.group(2))
            if key == "targets":
                targets = value
            elif section == "reexported-libraries" and key == "libraries":
                reexported.extend(value)
            elif section in ("exports", "reexports") and key in (
                "symbols", "weak-symbols", "thread-local-symbols"
            ):
                for t in targets:
                    arch = t.split("-")[0]
                    exports.setdefault(arch, set()).update(value)
            elif section in ("exports", "reexports") and key in ("objc-classes", "objc-eh-types"):
                for t in targets:
                    arch = t.split("-")[0]
                    exports.setdefault(arch, set()).update("_OBJC_CLASS_$_" + v for v in value)
        if install:
            docs[install] = (reexported, exports)
    return docs


def exported(docs, install, arch, seen=None):
    """Symbols a dylib provides for arch: its own and, transitively, those of libraries it re-exports.

    arm64 also takes arm64e entries: zig's libSystem stub lists some sub-libraries for arm64e only, and
    those libraries export the same names for both on macOS."""
    seen = seen if seen is not None else set()
    if install in seen or install not in docs:
        return set()
    seen.add(install)
    reexported, exports = docs[install]
    syms = set(exports.get(arch, set()))
    if arch == "arm64":
        syms |= exports.get("arm64e", set())
    for lib in reexported:
        syms |= exported(docs, lib, arch, seen)
    return syms


def short_name(install):
    """llvm-nm -m's `(from NAME)`: the file name less `.dylib`, a version suffix and `.framework` paths."""
    m = re.search(r"/([^/]+)\.framework/", install)
    if m:
        return m.group(1)
    base = install.rsplit("/", 1)[-1]
    base = re.sub(r"\.dylib$", "", base)
    return base.split(".", 1)[0]


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    binary, arch, min_os, tbds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    objdump, nm = tool("llvm-objdump"), tool("llvm-nm")
    failures = []

    headers = run(objdump, "--macho", "--private-header", "--private-headers", binary)
    cputype = {"x86_64": "X86_64", "arm64": "ARM64"}[arch]
    if not re.search(rf"MH_MAGIC_64\s+{cputype}\s+\S+\s+\S+\s+EXECUTE", headers):
        failures.append(f"not a 64-bit {arch} Mach-O executable")
    # The deployment target: LC_BUILD_VERSION's minos, or LC_VERSION_MIN_MACOSX's version (which the
    # linker writes instead for targets older than 10.14).
    minos = re.findall(r"^\s*cmd LC_BUILD_VERSION\n.*\n\s*platform \S+\n.*\n\s*minos\s+(\S+)", headers, flags=re.M)
    minos += re.findall(r"^\s*cmd LC_VERSION_MIN_MACOSX\n.*\n\s*version\s+(\S+)", headers, flags=re.M)
    if minos != [min_os]:
        failures.append(f"deployment target {minos} is not [{min_os!r}]")
    # Apple Silicon macOS runs no arm64 code without a signature; the linker signs ad hoc (the signature's
    # contents are not checked here, only that it is there).
    if arch == "arm64" and not re.search(r"^\s*cmd LC_CODE_SIGNATURE$", headers, flags=re.M):
        failures.append("no code signature (LC_CODE_SIGNATURE), which arm64 macOS requires")
    if re.search(r"LC_LOAD_WEAK_DYLIB|LC_REEXPORT_DYLIB|LC_LOAD_UPWARD_DYLIB", headers):
        failures.append("weak, upward or re-exported dylib load commands (not expected from this link)")

    docs = {}
    stub_of = {}
    for tbd in tbds:
        for install, doc in parse_tbd(tbd).items():
            docs[install] = doc
            stub_of[install] = tbd

    loaded = []
    for line in run(objdump, "--macho", "--dylibs-used", binary).splitlines()[1:]:
        m = re.match(r"^\s+(\S+) \(compatibility version", line)
        if m:
            loaded.append(m.group(1))
    by_short = {}
    for install in loaded:
        if install not in docs:
            failures.append(f"loads {install}, which no stub describes")
        by_short[short_name(install)] = install

    undefined = {}
    for line in run(nm, "-m", "--undefined-only", binary).splitlines():
        m = re.match(r"^\s*\(undefined\)\s+(?:weak\s+)?external\s+(\S+)(?:\s+\((.*)\))?\s*$", line)
        if not m:
            failures.append(f"unparsed llvm-nm line: {line.strip()}")
            continue
        sym, source = m.group(1), m.group(2) or ""
        src = re.match(r"^from (\S+)$", source)
        if not src or src.group(1) not in by_short:
            failures.append(f"{sym} is not bound to a loaded dylib ({source or 'no source'})")
            continue
        undefined.setdefault(by_short[src.group(1)], []).append(sym)

    print(f"{binary}: {arch}, minos {', '.join(minos)}")
    for install in loaded:
        syms = undefined.get(install, [])
        provided = exported(docs, install, arch)
        missing = [s for s in syms if s not in provided]
        for s in missing:
            failures.append(f"{s} is bound to {install}, whose stub does not export it for {arch}")
        shown = ""
        if len(syms) <= 8:
            shown = ": " + " ".join(sorted(syms))
        print(f"  {install} ({stub_of.get(install, 'no stub')}): {len(syms)} symbols{shown}")
    print(f"  {sum(len(v) for v in undefined.values())} undefined symbols in all")

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
