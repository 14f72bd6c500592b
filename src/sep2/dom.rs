//! A small element tree built with quick-xml's namespace reader. Names are resolved to
//! namespace URIs (prefixes never matter); text is unescaped; attributes in other
//! namespaces (xmlns, xsi) are dropped. Depth and size are bounded so that hostile
//! input cannot exhaust the stack or memory.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::read::ReadError;

/// The 2030.5 namespace.
pub const SEP_NS: &str = "urn:ieee:std:2030.5:ns";
/// csipaus namespaces start with this (`https://csipaus.org/ns`, `.../ns/v1.3`, ...).
pub const CSIPAUS_NS_PREFIX: &str = "https://csipaus.org/ns";

/// Deepest element nesting accepted (2030.5 documents are at most ~6 deep).
const MAX_DEPTH: usize = 64;
/// Most elements accepted in one document.
const MAX_ELEMENTS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// `urn:ieee:std:2030.5:ns`, or no namespace at all (servers that forget `xmlns`).
    Sep,
    /// Any csipaus namespace version.
    Csipaus,
    /// Anything else: skipped by the reader.
    Other,
}

#[derive(Debug, Default)]
pub struct Node {
    pub ns: Option<Ns>,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    pub text: String,
}

impl Node {
    fn ns(&self) -> Ns {
        self.ns.unwrap_or(Ns::Other)
    }

    /// True for elements in the 2030.5 or a csipaus namespace (foreign extensions
    /// never match, whatever their local name).
    pub fn is_known(&self) -> bool {
        matches!(self.ns(), Ns::Sep | Ns::Csipaus)
    }

    pub fn is_csipaus(&self) -> bool {
        self.ns() == Ns::Csipaus
    }

    /// First child with this local name in a known namespace.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.is_known() && c.name == name)
    }

    /// All children with this local name in a known namespace.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children
            .iter()
            .filter(move |c| c.is_known() && c.name == name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn classify(ns: &ResolveResult) -> Ns {
    match ns {
        ResolveResult::Unbound => Ns::Sep,
        ResolveResult::Bound(uri) => {
            let uri = uri.as_ref();
            if uri == SEP_NS {
                Ns::Sep
            } else if uri.starts_with(CSIPAUS_NS_PREFIX) {
                Ns::Csipaus
            } else {
                Ns::Other
            }
        }
        ResolveResult::Unknown(_) => Ns::Other,
    }
}

fn xml_err(reader: &NsReader<&[u8]>, e: impl std::fmt::Display) -> ReadError {
    ReadError::new(format!(
        "malformed XML at byte {}: {e}",
        reader.buffer_position()
    ))
}

fn open(reader: &NsReader<&[u8]>, ns: Ns, e: &BytesStart) -> Result<Node, ReadError> {
    let name = e.local_name().as_ref().to_string();
    let mut node = Node {
        ns: Some(ns),
        name,
        ..Node::default()
    };
    for attr in e.attributes() {
        let attr = attr.map_err(|err| xml_err(reader, format!("in <{}>: {err}", node.name)))?;
        let key = attr.key.as_ref();
        // xmlns declarations and prefixed attributes (xsi:schemaLocation) carry no data.
        if key.contains(':') || key == "xmlns" {
            continue;
        }
        let key = key.to_string();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| xml_err(reader, format!("in <{}> attribute {key}: {err}", node.name)))?
            .into_owned();
        node.attrs.push((key, value));
    }
    Ok(node)
}

fn resolve_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Parses a whole document into its root element.
pub fn parse(xml: &[u8]) -> Result<Node, ReadError> {
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    if let Err(e) = std::str::from_utf8(xml) {
        return Err(ReadError::new(format!(
            "document is not UTF-8 (invalid byte at {})",
            e.valid_up_to()
        )));
    }
    let mut reader = NsReader::from_reader(xml);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| xml_err(&reader, e))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(ReadError::new(format!(
                        "document has more than {MAX_ELEMENTS} elements"
                    )));
                }
                if root.is_some() {
                    return Err(xml_err(&reader, "content after the root element"));
                }
                let ns = classify(&reader.resolver().resolve_element(e.name()).0);
                let is_empty = matches!(event, Event::Empty(_));
                let node = open(&reader, ns, e)?;
                if is_empty {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                } else {
                    if stack.len() >= MAX_DEPTH {
                        return Err(xml_err(
                            &reader,
                            format!("elements nested deeper than {MAX_DEPTH}"),
                        ));
                    }
                    stack.push(node);
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches.
                let Some(mut node) = stack.pop() else {
                    return Err(xml_err(&reader, "end tag without start tag"));
                };
                let trimmed = node.text.trim();
                if trimmed.len() != node.text.len() {
                    node.text = trimmed.to_string();
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&t.xml10_content());
                } else if !t.xml10_content().trim().is_empty() {
                    return Err(xml_err(&reader, "text outside the root element"));
                }
            }
            Event::CData(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let name: &str = r.as_ref();
                let Some(c) = resolve_entity(name) else {
                    return Err(xml_err(&reader, format!("unknown entity &{name};")));
                };
                if let Some(node) = stack.last_mut() {
                    node.text.push(c);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(ReadError::new(format!(
            "document ends inside <{}> (truncated?)",
            open.name
        )));
    }
    root.ok_or_else(|| ReadError::new("empty document: no root element".to_string()))
}
