#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: apt packages and a
# Python venv for the test peers under target/peers-venv. Each area of the code adds
# its own needs as a script in tests/setup.d/ (sourced in name order). Idempotent:
# what is already there is not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."
export CSIPD_ROOT="$PWD"
export PEERS_VENV="$PWD/target/peers-venv"
mkdir -p target

# apt_need PKG... : installs the Debian packages that are missing.
apt_need() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: apt-get install ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        if [ ! -f target/.apt-updated ]; then
            $sudo apt-get update -qq && touch target/.apt-updated
        fi
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# pip_need SPEC... : installs Python packages into the peers venv when missing.
pip_need() {
    [ -x "$PEERS_VENV/bin/python" ] || python3 -m venv "$PEERS_VENV"
    local missing=()
    for spec in "$@"; do
        local name="${spec%%[=<>!]*}"
        "$PEERS_VENV/bin/pip" show -q "$name" >/dev/null 2>&1 || missing+=("$spec")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: pip install ${missing[*]}"
        "$PEERS_VENV/bin/pip" install -q --disable-pip-version-check "${missing[@]}"
    fi
}

for script in tests/setup.d/*.sh; do
    [ -e "$script" ] || continue
    # shellcheck source=/dev/null
    source "$script"
done
