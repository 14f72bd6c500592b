#!/usr/bin/env bash
# Cross-builds csipd with cargo-zigbuild and assembles installable OpenWrt .ipk files for
# csipd and luci-app-csipd.
#
#   bash scripts/build-packages.sh [aarch64|armv7|mipsel|x86_64 ...]
#   (default: aarch64 armv7 mipsel)
#
# Output: target/packages/<openwrt-arch>/csipd_<version>_<arch>.ipk,
#         target/packages/luci-app-csipd_<version>_all.ipk, target/packages/sizes.md,
#         and target/packages/breakdown-<short>.md (bytes per library and Rust crate,
#         from the unstripped binary target/<triple>/release/csipd by
#         scripts/size-breakdown.py; the packaged binary is that file stripped).
# Size: C code (OpenSSL, SQLite) at -Os (openssl-src asks for -O2; a later -O wins), no
# unwind tables in Rust or C code (panic = "abort": nothing unwinds, and a stripped
# binary cannot symbolize a backtrace anyway); OpenSSL and SQLite options come from
# .cargo/config.toml.
# The tools (zig, cargo-zigbuild) are installed into target/zig-venv when missing.
# OPENWRT_ARCH_<short> (e.g. OPENWRT_ARCH_aarch64=aarch64_generic) overrides the
# package architecture written into the control file.
# Features: `vendored` only, so the lab tools (`csipd demo`, `csipd fleet`: the `lab`
# feature) stay out of the router packages; CSIPD_PACKAGE_FEATURES overrides the list
# (e.g. "vendored lab").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/packages
mkdir -p "$out"

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
# Reproducible archives: timestamps come from the last commit.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)

venv=$root/target/zig-venv
if [ ! -x "$venv/bin/cargo-zigbuild" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check ziglang cargo-zigbuild
fi
export PATH="$venv/bin:$PATH"
features=${CSIPD_PACKAGE_FEATURES:-vendored}

# short name -> rust triple, default OpenWrt package architecture
triple_of() {
    case "$1" in
        aarch64) echo aarch64-unknown-linux-musl ;;
        armv7) echo armv7-unknown-linux-musleabihf ;;
        mipsel) echo mipsel-unknown-linux-musl ;;
        x86_64) echo x86_64-unknown-linux-musl ;;
        *) echo "build-packages: unknown target '$1' (aarch64, armv7, mipsel, x86_64)" >&2; exit 2 ;;
    esac
}
default_arch_of() {
    case "$1" in
        aarch64) echo aarch64_cortex-a53 ;;
        armv7) echo arm_cortex-a7_neon-vfpv4 ;;
        mipsel) echo mipsel_24kc ;;
        x86_64) echo x86_64 ;;
    esac
}

build_binary() {
    local short=$1 triple=$2
    local env_triple=${triple//-/_}
    local upper=${env_triple^^}
    local nounwind_c="-Os -fno-asynchronous-unwind-tables -fno-unwind-tables"
    local nounwind_rust="-C force-unwind-tables=no"
    # Unstripped, for scripts/size-breakdown.py; csipd_ipk strips the packaged copy.
    export CARGO_PROFILE_RELEASE_STRIP=false
    if [ "$short" = mipsel ]; then
        # Tier 3: no prebuilt std; build it from rust-src, without the backtrace
        # symbolizer (a stripped binary has no symbols to show) and with std's
        # size-optimized algorithms. OpenSSL's atomics check misfires under clang here.
        # Rust and C code non-PIC (relocation-model=static; -fno-pic after the -fPIC
        # of openssl-src and cc): the binary is a static non-PIE executable anyway, and
        # MIPS PIC code calls through the GOT ($gp loads, `jalr $t9`, $gp reloads after
        # each call). OpenSSL has no MIPS assembler here (scripts/openssl-configure).
        rustup component add rust-src >/dev/null 2>&1
        env "CFLAGS_$env_triple=-DBROKEN_CLANG_ATOMICS -fno-pic $nounwind_c" \
            "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=+crt-static -C link-self-contained=no -C relocation-model=static $nounwind_rust" \
            RUSTC_BOOTSTRAP=1 \
            cargo zigbuild --locked --release --target "$triple" \
            --no-default-features --features "$features" -Zbuild-std=std,panic_abort \
            -Zbuild-std-features=optimize_for_size
    else
        # std from rust-src here too, built the same way as for mipsel (smaller than
        # the prebuilt one, which carries the backtrace symbolizer).
        rustup component add rust-src >/dev/null 2>&1
        env "CFLAGS_$env_triple=$nounwind_c" "CARGO_TARGET_${upper}_RUSTFLAGS=$nounwind_rust" \
            RUSTC_BOOTSTRAP=1 \
            cargo zigbuild --locked --release --target "$triple" \
            --no-default-features --features "$features" -Zbuild-std=std,panic_abort \
            -Zbuild-std-features=optimize_for_size
    fi
    # LLVM's tools read every target (GNU strip on Debian knows only x86).
    local llvm
    llvm="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
    [ -x "$llvm/llvm-objcopy" ] || rustup component add llvm-tools >/dev/null 2>&1
    "$llvm/llvm-objcopy" --strip-all "target/$triple/release/csipd" \
        "target/$triple/release/csipd.stripped"
    python3 scripts/size-breakdown.py "target/$triple/release/csipd" "target/$triple/release" \
        "$llvm/llvm-nm" >"$out/breakdown-$short.md"
}

# Writes a tar.gz with root ownership and fixed timestamps.
pack() {
    local archive=$1 dir=$2
    shift 2
    tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
        -C "$dir" -czf "$archive" "$@"
}

# make_ipk NAME ARCH DATA_DIR CONTROL_DIR -> path of the .ipk
make_ipk() {
    local name=$1 arch=$2 data=$3 control=$4 dest=$5
    local work
    work=$(mktemp -d)
    # Installed-Size is the bytes the package puts on the router's flash.
    local installed
    installed=$(find "$data" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    sed -i "s/^Installed-Size: .*/Installed-Size: $installed/" "$control/control"
    # opkg extracts data.tar.gz over /: its "./" entry must not carry mktemp's 0700.
    chmod 0755 "$data" "$control"
    echo "2.0" >"$work/debian-binary"
    pack "$work/data.tar.gz" "$data" .
    pack "$work/control.tar.gz" "$control" .
    local ipk="$dest/${name}_${version}_${arch}.ipk"
    # OpenWrt's ipkg-build writes the outer archive as tar.gz; opkg reads it.
    pack "$ipk" "$work" ./debian-binary ./data.tar.gz ./control.tar.gz
    rm -rf "$work"
    echo "$ipk"
}

control_file() {
    local name=$1 arch=$2 depends=$3 description=$4
    cat <<EOF
Package: $name
Version: $version
Depends: $depends
Source: csipd
SourceName: $name
License: MIT OR Apache-2.0
Section: utils
SourceDateEpoch: $epoch
Maintainer: csipd developers
Architecture: $arch
Installed-Size: 0
Description: $description
EOF
}

csipd_ipk() {
    local short=$1 triple=$2 arch=$3
    local data control
    data=$(mktemp -d)
    control=$(mktemp -d)
    install -Dm0755 "target/$triple/release/csipd.stripped" "$data/usr/bin/csipd"
    install -Dm0755 files/etc/init.d/csipd "$data/etc/init.d/csipd"
    install -Dm0600 files/etc/config/csipd "$data/etc/config/csipd"
    # ubus object `csipd`: rpcd runs /usr/libexec/rpcd/csipd (the plugin wrapper when
    # files/ has one, else the binary itself).
    if [ -f files/usr/libexec/rpcd/csipd ]; then
        install -Dm0755 files/usr/libexec/rpcd/csipd "$data/usr/libexec/rpcd/csipd"
    else
        mkdir -p "$data/usr/libexec/rpcd"
        ln -s ../../bin/csipd "$data/usr/libexec/rpcd/csipd"
    fi
    control_file csipd "$arch" "libc" \
        "CSIP-AUS (IEEE 2030.5) dynamic-connection gateway: keeps the site inside the utility's export/import limits by controlling SunSpec inverters over Modbus." \
        >"$control/control"
    echo "/etc/config/csipd" >"$control/conffiles"
    cat >"$control/postinst" <<'EOF'
#!/bin/sh
# Nothing to do while building a firmware image (offline root).
[ -n "$IPKG_INSTROOT" ] && exit 0
/etc/init.d/csipd enable
/etc/init.d/csipd restart 2>/dev/null
# rpcd learns the new ubus object `csipd` only on reload.
[ -x /etc/init.d/rpcd ] && /etc/init.d/rpcd reload
exit 0
EOF
    cat >"$control/prerm" <<'EOF'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] && exit 0
/etc/init.d/csipd stop 2>/dev/null
/etc/init.d/csipd disable
exit 0
EOF
    cat >"$control/postrm" <<'EOF'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] && exit 0
[ -x /etc/init.d/rpcd ] && /etc/init.d/rpcd reload
exit 0
EOF
    chmod 0755 "$control/postinst" "$control/prerm" "$control/postrm"
    mkdir -p "$out/$arch"
    make_ipk csipd "$arch" "$data" "$control" "$out/$arch"
    rm -rf "$data" "$control"
}

luci_ipk() {
    local data control
    data=$(mktemp -d)
    control=$(mktemp -d)
    if [ -d luci-app/htdocs ]; then
        mkdir -p "$data/www"
        cp -r luci-app/htdocs/. "$data/www/"
    fi
    if [ -d luci-app/root ]; then
        cp -r luci-app/root/. "$data/"
    fi
    if [ -z "$(find "$data" -type f)" ]; then
        echo "build-packages: luci-app/ has no htdocs/ or root/ files" >&2
        exit 1
    fi
    find "$data" -type d -exec chmod 0755 {} +
    find "$data" -type f -exec chmod 0644 {} +
    control_file luci-app-csipd all "libc, csipd, luci-base" \
        "LuCI pages for csipd: utility connection, active limits, site flows, settings and certificate." \
        >"$control/control"
    cat >"$control/postinst" <<'EOF'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] && exit 0
# New menu and ACL files: drop LuCI's caches and let rpcd re-read the ACLs.
rm -f /tmp/luci-indexcache /tmp/luci-indexcache.*
rm -rf /tmp/luci-modulecache/
[ -x /etc/init.d/rpcd ] && /etc/init.d/rpcd reload
exit 0
EOF
    chmod 0755 "$control/postinst"
    make_ipk luci-app-csipd all "$data" "$control" "$out"
    rm -rf "$data" "$control"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7 mipsel)

sizes="$out/sizes.md"
{
    echo "| target | stripped binary (bytes) | csipd ipk (bytes) |"
    echo "|---|---|---|"
} >"$sizes"
for short in "${targets[@]}"; do
    triple=$(triple_of "$short")
    var="OPENWRT_ARCH_$short"
    arch=${!var:-$(default_arch_of "$short")}
    echo "build-packages: $short ($triple) -> $arch"
    build_binary "$short" "$triple"
    ipk=$(csipd_ipk "$short" "$triple" "$arch")
    echo "| $triple | $(stat -c %s "target/$triple/release/csipd.stripped") | $(stat -c %s "$ipk") |" >>"$sizes"
done
luci=$(luci_ipk)
echo "| luci-app-csipd (all) | - | $(stat -c %s "$luci") |" >>"$sizes"
cat "$sizes"
