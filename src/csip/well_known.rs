//! CSIP-AUS v1.3 service discovery and version negotiation (certification procedure
//! SDVN-01): with only a server URL configured, csipd reads [`WELL_KNOWN_PATH`], a JSON
//! document listing per CSIP-AUS version URI the DeviceCapability path(s) of that
//! version, e.g.
//!
//! ```json
//! {"supportedSchemaVersions": {"https://csipaus.org/ns/v1.3": {"dcap": ["/dcap"]}}}
//! ```
//!
//! (the format the reference harness serves, see ../shared/PEERS.md), picks the highest
//! version csipd speaks ([`SUPPORTED_VERSIONS`]) and walks from that version's
//! DeviceCapability, writing that version's csipaus namespace. The path of an
//! unsupported or malformed version is never requested.
//!
//! [`choose`] is the pure decision (JSON in, [`Choice`] or [`WellKnownError`] out);
//! [`WellKnownSet`] is the engine's function set that reads the document on its own
//! backoff (the poller's: 2 s doubling to 60 s) with its last error in the status. A
//! server without the document (404/410, a v1.2 server) or with no supported version is
//! an error in the status; csipd does not guess `/dcap` then (SDVN-01 fails a client that
//! does): the installer sets `option dcap_url` for such a server. The document is read
//! at the start and again only when the chosen DeviceCapability answers 404/410 (then
//! the walk moves to the path, and version, the server names now).
//!
//! `v1.3-beta/storage` (`https://csipaus.org/ns/v1.3-beta/storage`) is not supported:
//! csipd has no storage function set yet and writes no element of that namespace, so
//! such an entry is skipped as unsupported (SDVN-01 always offers plain v1.3 beside it).

use std::fmt;

use crate::sep2::{CsipausNs, WriteProfile};

use super::context::{Answer, Ctx, PollError, PollPart};
use super::poller::{PollKind, PollOutcome};

/// Where a CSIP-AUS v1.3 server publishes its versions (relative to the server URL).
pub const WELL_KNOWN_PATH: &str = "/.well-known/csipaus";

/// The CSIP-AUS version URIs csipd speaks, best first, with the csipaus namespace it
/// writes for each. v1.2 servers name their version either by its namespace
/// (`https://csipaus.org/ns`) or, as the certification harness does, `…/ns/v1.2`.
pub const SUPPORTED_VERSIONS: &[(&str, CsipausNs)] = &[
    ("https://csipaus.org/ns/v1.3", CsipausNs::V1_3),
    ("https://csipaus.org/ns/v1.2", CsipausNs::V1_0),
    ("https://csipaus.org/ns", CsipausNs::V1_0),
];

/// The CSIP-AUS version a csipaus namespace stands for, for the status and
/// `csipd discover`: `v1.3`, or `v1.2` for `https://csipaus.org/ns` (v1.0 to v1.2).
pub fn version_label(ns: CsipausNs) -> &'static str {
    match ns {
        CsipausNs::V1_3 => "v1.3",
        CsipausNs::V1_0 => "v1.2",
    }
}

/// The CSIP-AUS version a write profile speaks (`None` for plain IEEE 2030.5).
pub fn profile_version(profile: WriteProfile) -> Option<&'static str> {
    match profile {
        WriteProfile::CsipAus { ns } => Some(version_label(ns)),
        WriteProfile::Plain => None,
    }
}

/// Why a version entry of the document was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A version csipd does not speak (its paths are never requested).
    Unsupported,
    /// The entry is not usable (the message says why); its paths are never requested.
    Malformed(String),
    /// Supported and well formed, but a higher version was chosen.
    Lower,
}

/// One version entry that was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The version key as the server wrote it.
    pub version_uri: String,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            SkipReason::Unsupported => write!(f, "{}: not supported", self.version_uri),
            SkipReason::Malformed(why) => write!(f, "{}: malformed ({why})", self.version_uri),
            SkipReason::Lower => write!(f, "{}: supported, a higher one is used", self.version_uri),
        }
    }
}

/// The version csipd uses and where its DeviceCapability is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The version key as the server wrote it.
    pub version_uri: String,
    /// The csipaus namespace written from now on.
    pub ns: CsipausNs,
    /// The DeviceCapability path (the first of the version's list), on the server's host.
    pub dcap_path: String,
    /// Every other entry, ordered by version URI, with why it was not used.
    pub skipped: Vec<Skipped>,
}

/// Why no version could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WellKnownError {
    /// The body is not JSON (the parser's message).
    NotJson(String),
    /// JSON, but not an object with a `supportedSchemaVersions` object.
    Shape(String),
    /// No entry is a supported, well-formed version; each entry with why.
    NoSupportedVersion(Vec<Skipped>),
}

impl fmt::Display for WellKnownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WellKnownError::NotJson(why) => write!(f, "not JSON: {why}"),
            WellKnownError::Shape(why) => write!(f, "unexpected document: {why}"),
            WellKnownError::NoSupportedVersion(skipped) if skipped.is_empty() => {
                f.write_str("no CSIP-AUS version offered")
            }
            WellKnownError::NoSupportedVersion(skipped) => {
                f.write_str("no supported CSIP-AUS version offered (")?;
                for (i, s) in skipped.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl std::error::Error for WellKnownError {}

/// A usable entry (rank in [`SUPPORTED_VERSIONS`], namespace, DeviceCapability path), or
/// why it is skipped.
type Verdict = Result<(usize, CsipausNs, String), SkipReason>;

/// Chooses the version and DeviceCapability path from the body of
/// [`WELL_KNOWN_PATH`]. `server_url` is the origin it came from (`https://host[:port]`):
/// an absolute DeviceCapability URL is accepted only on that origin.
///
/// An entry is malformed when it is not an object, its `dcap` is missing, not a list or
/// empty, or any of its paths is not a string, not an absolute path (`/…`) or an URL on
/// another host: the whole entry is skipped then (a server that writes garbage into a
/// version's entry is not trusted for that version), and the other entries still count.
pub fn choose(body: &[u8], server_url: &str) -> Result<Choice, WellKnownError> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WellKnownError::NotJson(e.to_string()))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| WellKnownError::Shape("the document is not a JSON object".into()))?;
    let versions = obj
        .get("supportedSchemaVersions")
        .ok_or_else(|| WellKnownError::Shape("no \"supportedSchemaVersions\"".into()))?
        .as_object()
        .ok_or_else(|| {
            WellKnownError::Shape("\"supportedSchemaVersions\" is not an object".into())
        })?;
    // Each entry: Ok((rank in SUPPORTED_VERSIONS, ns, dcap path)) or Err(why skipped).
    let judged: Vec<(&String, Verdict)> = versions
        .iter()
        .map(|(uri, entry)| {
            let verdict = match SUPPORTED_VERSIONS.iter().position(|(u, _)| u == uri) {
                None if !uri.contains("://") => {
                    Err(SkipReason::Malformed("the version is not a URI".into()))
                }
                None => Err(SkipReason::Unsupported),
                Some(rank) => dcap_path_of(entry, server_url)
                    .map(|path| (rank, SUPPORTED_VERSIONS[rank].1, path))
                    .map_err(SkipReason::Malformed),
            };
            (uri, verdict)
        })
        .collect();
    let best = judged
        .iter()
        .filter_map(|(uri, v)| v.as_ref().ok().map(|(rank, _, _)| (*rank, *uri)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, uri)| uri.clone());
    let mut chosen = None;
    let mut skipped = Vec::new();
    for (uri, verdict) in judged {
        match verdict {
            Ok((_, ns, path)) if chosen.is_none() && Some(uri) == best.as_ref() => {
                chosen = Some((uri.clone(), ns, path));
            }
            Ok(_) => skipped.push(Skipped {
                version_uri: uri.clone(),
                reason: SkipReason::Lower,
            }),
            Err(reason) => skipped.push(Skipped {
                version_uri: uri.clone(),
                reason,
            }),
        }
    }
    match chosen {
        Some((version_uri, ns, dcap_path)) => Ok(Choice {
            version_uri,
            ns,
            dcap_path,
            skipped,
        }),
        None => Err(WellKnownError::NoSupportedVersion(skipped)),
    }
}

/// The first DeviceCapability path of a supported version's entry, or why the entry is
/// malformed.
fn dcap_path_of(entry: &serde_json::Value, server_url: &str) -> Result<String, String> {
    let entry = entry
        .as_object()
        .ok_or_else(|| "the entry is not an object".to_string())?;
    let list = entry
        .get("dcap")
        .ok_or_else(|| "no \"dcap\" list".to_string())?
        .as_array()
        .ok_or_else(|| "\"dcap\" is not a list".to_string())?;
    let mut paths = Vec::with_capacity(list.len());
    for item in list {
        let text = item
            .as_str()
            .ok_or_else(|| format!("dcap {item} is not a string"))?;
        paths.push(same_host_path(text, server_url)?);
    }
    paths
        .into_iter()
        .next()
        .ok_or_else(|| "the \"dcap\" list is empty".to_string())
}

/// `text` as a path on the server at `server_url`: an absolute path, or an absolute
/// URL on the same origin (scheme, host, port).
fn same_host_path(text: &str, server_url: &str) -> Result<String, String> {
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '\\';
    if text.chars().any(bad_char) {
        return Err(format!("dcap {text:?} has a space or control character"));
    }
    if text.starts_with('/') && !text.starts_with("//") {
        return Ok(text.to_string());
    }
    if !text.contains("://") {
        return Err(format!("dcap {text:?} is not an absolute path"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("dcap {text:?}: {e}"))?;
    let origin = url::Url::parse(server_url)
        .map_err(|e| format!("server URL {server_url:?}: {e}"))?
        .origin();
    if url.origin() != origin || !matches!(url.scheme(), "https" | "http") {
        return Err(format!("dcap {text:?} is on another host"));
    }
    Ok(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    })
}

/// The engine's function set for the well-known document (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct WellKnownSet {
    /// The version in use, once chosen.
    pub choice: Option<Choice>,
}

impl WellKnownSet {
    /// Starts tracking the document (due at once; if it is tracked already, it keeps
    /// its own backoff).
    pub fn start(&self, ctx: &mut Ctx) {
        let now_ms = ctx.now.mono_ms;
        ctx.poller
            .track(WELL_KNOWN_PATH, PollKind::WellKnown, None, now_ms);
    }

    pub fn request(&self, ctx: &mut Ctx, href: &str) {
        ctx.poll(href, PollKind::WellKnown, PollPart::Single);
    }

    /// Handles an answer. Returns the DeviceCapability path to walk from once a version
    /// is chosen; a failure stays in the status and is retried on the poller's backoff.
    /// The chosen version's namespace becomes the one written (CSIP-AUS profile only).
    pub fn handle(&mut self, ctx: &mut Ctx, href: &str, answer: Answer) -> Option<String> {
        let kind = PollKind::WellKnown;
        let failed = |message: String| PollError {
            // Not `Gone`: a missing document must not walk the (empty) tree again.
            outcome: PollOutcome::Failed,
            message,
            retry_after_ms: None,
            unreachable: false,
        };
        let response = match answer {
            Answer::Ok(response) => response,
            Answer::Gone(status) => {
                ctx.poll_failed(
                    href,
                    kind,
                    failed(format!(
                        "the server answered {status}: it publishes no CSIP-AUS versions \
                         (a v1.2 server?); set option dcap_url to its DeviceCapability URL"
                    )),
                );
                return None;
            }
            other => {
                ctx.poll_failed(href, kind, PollError::of(other));
                return None;
            }
        };
        let choice = match choose(&response.body, &ctx.config.http.server_url) {
            Ok(choice) => choice,
            Err(err) => {
                ctx.poll_failed(href, kind, failed(err.to_string()));
                return None;
            }
        };
        for skipped in &choice.skipped {
            if matches!(skipped.reason, SkipReason::Malformed(_)) {
                log::warn!("csip: {href}: version entry skipped: {skipped}");
            }
        }
        log::info!(
            "csip: {href}: using CSIP-AUS {} ({}), DeviceCapability {}",
            version_label(choice.ns),
            choice.version_uri,
            choice.dcap_path
        );
        ctx.poll_ok(href, kind, None);
        // Read once: the walk goes on from the chosen DeviceCapability.
        ctx.poller.untrack(href);
        if ctx.profile != WriteProfile::Plain {
            ctx.profile = WriteProfile::CsipAus { ns: choice.ns };
        }
        let path = choice.dcap_path.clone();
        self.choice = Some(choice);
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "https://utility.example:8443";

    fn pick(json: &str) -> Result<Choice, WellKnownError> {
        choose(json.as_bytes(), SERVER)
    }

    #[test]
    fn only_v1_3() {
        let choice = pick(
            r#"{"supportedSchemaVersions": {"https://csipaus.org/ns/v1.3": {"dcap": ["/dcap"]}}}"#,
        )
        .expect("v1.3");
        assert_eq!(choice.ns, CsipausNs::V1_3);
        assert_eq!(choice.version_uri, "https://csipaus.org/ns/v1.3");
        assert_eq!(choice.dcap_path, "/dcap");
        assert!(choice.skipped.is_empty());
    }

    #[test]
    fn v1_2_and_v1_3_pick_v1_3_whatever_the_order() {
        let choice = pick(
            r#"{"supportedSchemaVersions": {
                "https://csipaus.org/ns": {"dcap": ["/sep2/dcap"]},
                "https://csipaus.org/ns/v1.3": {"dcap": ["/api/v13/dcap", "/other"]}}}"#,
        )
        .expect("v1.3");
        assert_eq!(choice.ns, CsipausNs::V1_3);
        assert_eq!(choice.dcap_path, "/api/v13/dcap");
        assert_eq!(
            choice.skipped,
            [Skipped {
                version_uri: "https://csipaus.org/ns".into(),
                reason: SkipReason::Lower
            }]
        );
    }

    #[test]
    fn unknown_future_version_and_v1_2_pick_v1_2() {
        let choice = pick(
            r#"{"supportedSchemaVersions": {
                "https://csipaus.org/ns/v99.99": {"dcap": ["/future/dcap"]},
                "https://csipaus.org/ns/v1.2": {"dcap": ["/dcap12"]}}}"#,
        )
        .expect("v1.2");
        assert_eq!(choice.ns, CsipausNs::V1_0);
        assert_eq!(version_label(choice.ns), "v1.2");
        assert_eq!(choice.dcap_path, "/dcap12");
        assert_eq!(choice.skipped.len(), 1);
        assert_eq!(choice.skipped[0].reason, SkipReason::Unsupported);
        // The storage beta is not a version csipd speaks either.
        let beta = pick(
            r#"{"supportedSchemaVersions": {"https://csipaus.org/ns/v1.3-beta/storage": {"dcap": ["/b"]}}}"#,
        );
        assert!(
            matches!(&beta, Err(WellKnownError::NoSupportedVersion(s)) if s[0].reason == SkipReason::Unsupported),
            "{beta:?}"
        );
    }

    #[test]
    fn malformed_entries_beside_a_good_one_are_skipped_with_why() {
        // The SDVN-01 set-up: v99.99, a "null" version, v1.2 with no path, good v1.3,
        // plus entries csipd would speak but that are broken in every other way.
        let choice = pick(
            r#"{"supportedSchemaVersions": {
                "https://csipaus.org/ns/v99.99": {"dcap": ["/rand1"]},
                "null": {"dcap": ["/rand2"]},
                "https://csipaus.org/ns/v1.2": {"dcap": []},
                "https://csipaus.org/ns": {"dcap": "/not-a-list"},
                "https://csipaus.org/ns/v1.3": {"dcap": ["https://utility.example:8443/rand3?x=1"]}}}"#,
        )
        .expect("v1.3");
        assert_eq!(choice.dcap_path, "/rand3?x=1");
        let why = |uri: &str| {
            choice
                .skipped
                .iter()
                .find(|s| s.version_uri == uri)
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        assert!(why("https://csipaus.org/ns/v99.99").ends_with("not supported"));
        assert!(why("null").contains("not a URI"));
        assert!(why("https://csipaus.org/ns/v1.2").contains("list is empty"));
        assert!(why("https://csipaus.org/ns").contains("not a list"));
        // Broken paths of a supported version: the version is malformed, never touched.
        for (entry, expect) in [
            (r#"{"dcap": ["dcap"]}"#, "not an absolute path"),
            (
                r#"{"dcap": ["//evil.example/dcap"]}"#,
                "not an absolute path",
            ),
            (
                r#"{"dcap": ["https://evil.example/dcap"]}"#,
                "on another host",
            ),
            (
                r#"{"dcap": ["http://utility.example:8443/dcap"]}"#,
                "on another host",
            ),
            (r#"{"dcap": ["/dcap", 7]}"#, "not a string"),
            (r#"{"dcap": ["/d cap"]}"#, "space"),
            (r#"{"paths": ["/dcap"]}"#, "no \"dcap\""),
            (r#"["/dcap"]"#, "not an object"),
            (r#"null"#, "not an object"),
        ] {
            let doc = format!(
                r#"{{"supportedSchemaVersions": {{"https://csipaus.org/ns/v1.3": {entry},
                    "https://csipaus.org/ns": {{"dcap": ["/good"]}}}}}}"#
            );
            let choice = pick(&doc).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(
                (choice.ns, choice.dcap_path.as_str()),
                (CsipausNs::V1_0, "/good")
            );
            assert!(
                matches!(&choice.skipped[0].reason, SkipReason::Malformed(w) if w.contains(expect)),
                "{entry}: {:?}",
                choice.skipped
            );
        }
    }

    #[test]
    fn garbage_and_empty_documents_are_clear_errors() {
        let err = pick("<html>Not Found</html>").unwrap_err();
        assert!(matches!(err, WellKnownError::NotJson(_)));
        assert!(err.to_string().starts_with("not JSON: "), "{err}");
        assert!(matches!(pick(""), Err(WellKnownError::NotJson(_))));
        assert_eq!(
            pick("{}").unwrap_err().to_string(),
            "unexpected document: no \"supportedSchemaVersions\""
        );
        assert!(matches!(pick("[1]"), Err(WellKnownError::Shape(_))));
        assert!(matches!(
            pick(r#"{"supportedSchemaVersions": ["https://csipaus.org/ns/v1.3"]}"#),
            Err(WellKnownError::Shape(_))
        ));
        assert_eq!(
            pick(r#"{"supportedSchemaVersions": {}}"#)
                .unwrap_err()
                .to_string(),
            "no CSIP-AUS version offered"
        );
        let err = pick(
            r#"{"supportedSchemaVersions": {"https://csipaus.org/ns/v99.99": {"dcap": ["/x"]},
                "https://csipaus.org/ns/v1.3": {"dcap": []}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no supported CSIP-AUS version offered (https://csipaus.org/ns/v1.3: malformed \
             (the \"dcap\" list is empty); https://csipaus.org/ns/v99.99: not supported)"
        );
    }
}
