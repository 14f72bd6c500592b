# GridAPPS-D IEEE 2030.5 server (PyPI gridappsd-2030-5, BSD-3) for tests/http_gridappsd.rs,
# plus the openssl CLI used by tests/http_tls.rs to make certificates and run s_server.
# Sourced by tests/setup.sh (which defines apt_need, pip_need and PEERS_VENV).
apt_need openssl

GRIDAPPSD_SPEC="gridappsd-2030-5==0.0.2a37"
if ! "$PEERS_VENV/bin/pip" show -q gridappsd-2030-5 >/dev/null 2>&1; then
    pip_need pip   # creates the venv when missing
    gridappsd_dl="$CSIPD_ROOT/target/gridappsd-wheel"
    mkdir -p "$gridappsd_dl"
    echo "setup: pip download $GRIDAPPSD_SPEC"
    "$PEERS_VENV/bin/pip" download -q --disable-pip-version-check --no-deps \
        "$GRIDAPPSD_SPEC" -d "$gridappsd_dl"
    gridappsd_whl=$(ls "$gridappsd_dl"/gridappsd_2030_5-*.whl | head -n1)
    # The wheel pins gevent<22, which does not build on Python 3.11: install its other
    # requirements as declared, with gevent unpinned, then the wheel itself without deps.
    mapfile -t gridappsd_reqs < <(unzip -p "$gridappsd_whl" '*.dist-info/METADATA' \
        | sed -n 's/^Requires-Dist: //p' | grep -v ';' \
        | sed -e 's/ (\(.*\))$/\1/' -e 's/^gevent.*/gevent/')
    echo "setup: pip install ${#gridappsd_reqs[@]} requirements of $GRIDAPPSD_SPEC"
    "$PEERS_VENV/bin/pip" install -q --disable-pip-version-check "${gridappsd_reqs[@]}"
    "$PEERS_VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$gridappsd_whl"
fi
