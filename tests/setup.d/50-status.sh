# Status area: headless Chromium renders the built-in status page (tests/status_page.rs)
# and the LuCI views (tests/status_luci.rs, screenshots in target/luci-screens/).
# node (for `node --check` on the LuCI JavaScript) is expected on the machine; install it
# from Debian when missing.
apt_need chromium
command -v node >/dev/null 2>&1 || apt_need nodejs
