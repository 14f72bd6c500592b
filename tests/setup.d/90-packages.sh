# OpenWrt packages: cross-build aarch64 and mipsel, assemble the .ipk files, and install
# qemu-user-static so tests/packages.rs can run the foreign binaries.
# CSIPD_PACKAGE_TARGETS overrides the list (e.g. "aarch64 armv7 mipsel").
apt_need qemu-user-static
bash scripts/build-packages.sh ${CSIPD_PACKAGE_TARGETS:-aarch64 mipsel}
