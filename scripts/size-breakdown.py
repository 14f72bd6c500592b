#!/usr/bin/env python3
"""Size of a csipd binary per library: OpenSSL (libssl, libcrypto), SQLite, each Rust
crate, the C library, and what carries no symbol (unwind tables, relocations, string
literals, ELF headers).

usage: scripts/size-breakdown.py BINARY BUILD_DIR [NM]

BINARY must still have its symbol table (build with CARGO_PROFILE_RELEASE_STRIP=false;
the shipped binary is that file stripped). BUILD_DIR is the profile directory the binary
was built in (target/release, target/<triple>/release): the static libraries built
there (OpenSSL's libssl.a/libcrypto.a, libsqlite3.a) tell which symbols are theirs. NM
defaults to `nm` (binutils reads every ELF target used here).

Rust symbols are attributed to the first crate named in their demangled path (for
`<a::T as b::Trait>::f`, crate a): generic code instantiated by csipd counts for the
crate that defined it, as `cargo bloat --crates` does.
"""

import glob
import os
import re
import subprocess
import sys
from collections import defaultdict


LEGACY_ESCAPES = [
    ("$LT$", "<"), ("$GT$", ">"), ("$RF$", "&"), ("$BP$", "*"), ("$SP$", "@"),
    ("$C$", ","), ("$u20$", " "), ("$u27$", "'"), ("$u5b$", "["), ("$u5d$", "]"),
    ("$u7b$", "{"), ("$u7d$", "}"), ("$u7e$", "~"), ("..", "::"),
]


def run(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def defined_symbols(nm, archive):
    names = set()
    for line in run([nm, "--defined-only", archive]).splitlines():
        parts = line.split()
        if len(parts) == 3:
            names.add(parts[2])
    return names


def newest(pattern):
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    return found[-1] if found else None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, build_dir = sys.argv[1], sys.argv[2]
    nm = sys.argv[3] if len(sys.argv) > 3 else "nm"
    libs = {}
    ssl_lib = newest(f"{build_dir}/build/openssl-sys-*/out/openssl-build/install/lib*/libssl.a")
    if ssl_lib:
        libs["OpenSSL libssl"] = defined_symbols(nm, ssl_lib)
        libs["OpenSSL libcrypto"] = defined_symbols(nm, ssl_lib.replace("libssl.a", "libcrypto.a"))
    sqlite_lib = newest(f"{build_dir}/build/libsqlite3-sys-*/out/libsqlite3.a")
    if sqlite_lib:
        libs["SQLite"] = defined_symbols(nm, sqlite_lib)

    file_size = os.path.getsize(binary)
    # Bytes that end up in the stripped file: every allocated section.
    alloc = 0
    for line in run(["readelf", "-SW", binary]).splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
        if m and "A" in m.group(4) and m.group(2) != "NOBITS":
            alloc += int(m.group(3), 16)

    sizes = defaultdict(int)
    out = run([nm, "--print-size", "--size-sort", "--demangle", binary])
    raw = run([nm, "--print-size", "--size-sort", binary])
    for line, raw_line in zip(out.splitlines(), raw.splitlines()):
        parts = line.split(maxsplit=3)
        raw_parts = raw_line.split(maxsplit=3)
        if len(parts) < 4 or parts[2] in "bBuU":  # bss takes no file space
            continue
        size = int(parts[1], 16)
        name, mangled = parts[3], raw_parts[3]
        if "$" in name:  # Rust legacy escapes some demanglers leave (llvm-nm)
            name = name.lstrip("_")
            for esc, ch in LEGACY_ESCAPES:
                name = name.replace(esc, ch)
        owner = next((lib for lib, names in libs.items() if mangled in names), None)
        if owner is None:
            if mangled.startswith(("_ZN", "_R")) or "::" in name:
                path = re.sub(r"^(?:[<&*( ]|mut |dyn |const )+", "", name).split(" as ")[0]
                owner = "Rust: " + re.split(r"::|<|>", path)[0].strip()
            else:
                owner = "C library and other C"
        sizes[owner] += size
    named = sum(sizes.values())
    print(f"| part | bytes | share of the stripped file |")
    print(f"|---|---|---|")
    rows = sorted(sizes.items(), key=lambda kv: -kv[1])
    small = [(k, v) for k, v in rows if v < 10_000]
    for owner, size in rows:
        if size >= 10_000:
            print(f"| {owner} | {size:,} | {size / alloc * 100:.1f} % |")
    if small:
        total = sum(v for _, v in small)
        print(f"| {len(small)} more, under 10 kB each | {total:,} | {total / alloc * 100:.1f} % |")
    rest = alloc - named
    print(
        f"| no symbol: unwind tables, relocations, string literals, headers | {rest:,} | "
        f"{rest / alloc * 100:.1f} % |"
    )
    print(f"| **stripped file (allocated sections)** | **{alloc:,}** | 100 % |")
    print(f"\n(unstripped {file_size:,} bytes: {binary})")


if __name__ == "__main__":
    main()
