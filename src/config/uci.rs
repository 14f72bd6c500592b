//! The OpenWrt UCI file syntax, parsed exactly as libuci reads it: `package`,
//! `config TYPE ['name']`, `option NAME VALUE`, `list NAME VALUE`; single quotes are
//! literal, double quotes take backslash escapes, adjacent quoted and unquoted parts of
//! one word concatenate (`'it'\''s'`), quoted values may span lines, `#` starts a comment
//! outside quotes, `;` ends a statement, and a backslash at the end of a line continues it.
//! Also as in libuci: keywords may be written as their first letter (`c`, `o`, ...) but
//! not quoted; `config TYPE ''` is anonymous; `option NAME ''` (or no value) deletes the
//! option; a repeated `option` replaces the value and `list` appends; a repeated named
//! section of the same type reopens the first. Section types may hold any printable
//! character except spaces; section and option names only `[A-Za-z0-9_]`.
//!
//! Pure: [`parse`] takes the text and the file name used in messages. Every value keeps
//! its line and column so later checks can point at it.

use std::fmt;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// One value as written, after quotes and escapes are resolved, with where it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub pos: Pos,
}

/// Whether an option was written with `option` (one value) or `list` (many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    Option,
    List,
}

/// An option of a section. `pos` is where its keyword (`option`/`list`) starts on the
/// line that last set it. An `option` repeats replace the value (as libuci does); `list`
/// lines append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciOption {
    pub name: String,
    pub pos: Pos,
    pub kind: OptionKind,
    pub values: Vec<Value>,
}

/// A `config TYPE ['name']` section with its options in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub section_type: String,
    /// `None` for an anonymous section.
    pub name: Option<String>,
    /// Where the `config` keyword is.
    pub pos: Pos,
    /// Index among the sections of the same type (the N in `@type[N]`).
    pub type_index: usize,
    pub options: Vec<UciOption>,
}

impl Section {
    /// The name, or `@type[N]` for an anonymous section (the form `uci` accepts).
    pub fn address(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("@{}[{}]", self.section_type, self.type_index),
        }
    }

    /// The option called `name`, if set.
    pub fn get(&self, name: &str) -> Option<&UciOption> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UciFile {
    /// The `package NAME` line, if any.
    pub package: Option<Value>,
    pub sections: Vec<Section>,
    /// Named sections declared again (libuci merges them into the first): where the
    /// repeat is and the line of the first. Legal UCI, but an installer who copies a
    /// `config device 'inv'` block for a second inverter gets one device, so
    /// check-config warns.
    pub repeated: Vec<RepeatedSection>,
}

/// A named section declared a second time (see [`UciFile::repeated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedSection {
    pub section_type: String,
    pub name: String,
    /// The repeated `config` line.
    pub pos: Pos,
    /// The line of the first declaration.
    pub first_line: u32,
}

impl UciFile {
    /// Looks a section up by name or by `@type[N]` (`N` may be negative, counting from
    /// the end: `@device[-1]` is the last device section).
    pub fn section(&self, address: &str) -> Option<&Section> {
        if let Some(rest) = address.strip_prefix('@') {
            let (section_type, index) = rest.strip_suffix(']')?.split_once('[')?;
            let index: i64 = index.parse().ok()?;
            let of_type: Vec<&Section> = self
                .sections
                .iter()
                .filter(|s| s.section_type == section_type)
                .collect();
            let len = i64::try_from(of_type.len()).ok()?;
            let index = if index < 0 { len + index } else { index };
            usize::try_from(index)
                .ok()
                .and_then(|i| of_type.get(i).copied())
        } else {
            self.sections
                .iter()
                .find(|s| s.name.as_deref() == Some(address))
        }
    }

    /// The sections of one type, in file order.
    pub fn sections_of<'a>(&'a self, section_type: &'a str) -> impl Iterator<Item = &'a Section> {
        self.sections
            .iter()
            .filter(move |s| s.section_type == section_type)
    }
}

/// A syntax error: where and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// One word of a statement after quote processing.
#[derive(Debug)]
struct Word {
    text: String,
    pos: Pos,
    /// Written without quotes or backslashes (only such a word can be a keyword).
    plain: bool,
}

struct Lexer<'a> {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
    file: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.i).copied()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Whether the characters at `i` are a line end (`\n` or `\r\n`).
    fn at_continuation(&self, i: usize) -> bool {
        match self.chars.get(i) {
            Some('\n') => true,
            Some('\r') => self.chars.get(i + 1) == Some(&'\n'),
            _ => false,
        }
    }

    fn error(&self, pos: Pos, message: String) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            pos,
            message,
        }
    }

    /// After a backslash: a line end continues the line (`\r\n` too); anything else is
    /// taken literally. Returns the literal character, if any.
    fn backslash(&mut self, at: Pos) -> Result<Option<char>, ParseError> {
        match self.peek() {
            None => Err(self.error(
                at,
                "backslash at the end of the file; expected a character after it".to_string(),
            )),
            Some('\n') => {
                self.bump();
                Ok(None)
            }
            Some('\r') if self.chars.get(self.i + 1) == Some(&'\n') => {
                self.bump();
                self.bump();
                Ok(None)
            }
            Some(c) => {
                self.bump();
                Ok(Some(c))
            }
        }
    }

    /// The words of the next statement, or `None` at the end of the file.
    fn statement(&mut self) -> Result<Option<Vec<Word>>, ParseError> {
        let mut words = Vec::new();
        loop {
            match self.peek() {
                None => return Ok(if words.is_empty() { None } else { Some(words) }),
                Some('\n') | Some(';') => {
                    self.bump();
                    if !words.is_empty() {
                        return Ok(Some(words));
                    }
                }
                Some(' ') | Some('\t') | Some('\r') => {
                    self.bump();
                }
                // A backslash-newline between words continues the statement.
                Some('\\') if self.at_continuation(self.i + 1) => {
                    let at = self.pos();
                    self.bump();
                    self.backslash(at)?;
                }
                Some('#') => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                Some(_) => words.push(self.word()?),
            }
        }
    }

    fn word(&mut self) -> Result<Word, ParseError> {
        let pos = self.pos();
        let start = self.i;
        let mut text = String::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' | '#' => break,
                '\\' => {
                    let at = self.pos();
                    self.bump();
                    if let Some(c) = self.backslash(at)? {
                        text.push(c);
                    }
                }
                '\'' => {
                    let start = self.pos();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => {
                                return Err(self.error(
                                    start,
                                    "unterminated single quote; expected a closing ' before \
                                     the end of the file"
                                        .to_string(),
                                ));
                            }
                            Some('\'') => break,
                            Some(c) => text.push(c),
                        }
                    }
                }
                '"' => {
                    let start = self.pos();
                    self.bump();
                    loop {
                        let at = self.pos();
                        match self.bump() {
                            None => {
                                return Err(self.error(
                                    start,
                                    "unterminated double quote; expected a closing \" before \
                                     the end of the file"
                                        .to_string(),
                                ));
                            }
                            Some('"') => break,
                            Some('\\') => {
                                if let Some(c) = self.backslash(at)? {
                                    text.push(c);
                                }
                            }
                            Some(c) => text.push(c),
                        }
                    }
                }
                c => {
                    self.bump();
                    text.push(c);
                }
            }
        }
        let plain = self.chars[start..self.i]
            .iter()
            .all(|c| !matches!(c, '\'' | '"' | '\\'));
        Ok(Word { text, pos, plain })
    }
}

/// Section, option and package names: letters, digits and `_` (packages also `-`).
fn valid_name(name: &str, allow_dash: bool) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_dash && c == '-'))
}

/// Section types: like libuci, any printable ASCII without spaces.
fn valid_type(section_type: &str) -> bool {
    !section_type.is_empty() && section_type.chars().all(|c| c.is_ascii_graphic())
}

/// The statement a keyword starts; libuci also takes the first letter alone.
fn statement_kind(word: &Word) -> Option<&'static str> {
    if !word.plain {
        return None;
    }
    ["package", "config", "option", "list"]
        .into_iter()
        .find(|k| word.text == *k || (word.text.len() == 1 && k.starts_with(&word.text)))
}

/// Parses UCI text. `file` names the source in error messages.
pub fn parse(text: &str, file: &str) -> Result<UciFile, ParseError> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
        file,
    };
    let mut out = UciFile::default();
    // Index into out.sections of the section that `option` lines go to.
    let mut current: Option<usize> = None;
    while let Some(words) = lexer.statement()? {
        let keyword = &words[0];
        let err = |pos: Pos, message: String| ParseError {
            file: file.to_string(),
            pos,
            message,
        };
        let extra = |after: &str, n: usize| -> Result<(), ParseError> {
            match words.get(n) {
                Some(w) => Err(err(
                    w.pos,
                    format!(
                        "unexpected '{}' after {after}; expected the end of the line \
                         (quote values that contain spaces)",
                        w.text
                    ),
                )),
                None => Ok(()),
            }
        };
        match statement_kind(keyword) {
            Some("package") => {
                let Some(name) = words.get(1) else {
                    return Err(err(
                        keyword.pos,
                        "expected a package name after 'package'".to_string(),
                    ));
                };
                if !valid_name(&name.text, true) {
                    return Err(err(
                        name.pos,
                        format!(
                            "invalid package name '{}'; expected letters, digits, '_' and '-'",
                            name.text
                        ),
                    ));
                }
                if let Some(first) = &out.package {
                    return Err(err(
                        keyword.pos,
                        format!(
                            "a second 'package' line; the file already named package '{}' \
                             on line {}",
                            first.text, first.pos.line
                        ),
                    ));
                }
                extra("the package name", 2)?;
                out.package = Some(Value {
                    text: name.text.clone(),
                    pos: name.pos,
                });
            }
            Some("config") => {
                let Some(section_type) = words.get(1) else {
                    return Err(err(
                        keyword.pos,
                        "expected a section type after 'config'".to_string(),
                    ));
                };
                if !valid_type(&section_type.text) {
                    return Err(err(
                        section_type.pos,
                        format!(
                            "invalid section type '{}'; expected printable characters without \
                             spaces",
                            section_type.text
                        ),
                    ));
                }
                // An empty name (`config device ''`) makes an anonymous section, as in libuci.
                let name = words.get(2).filter(|name| !name.text.is_empty());
                if let Some(name) = name {
                    if !valid_name(&name.text, false) {
                        return Err(err(
                            name.pos,
                            format!(
                                "invalid section name '{}'; expected letters, digits and '_'",
                                name.text
                            ),
                        ));
                    }
                }
                extra("the section name", 3)?;
                // libuci merges a repeated named section of the same type into the first.
                let existing = name.and_then(|name| {
                    out.sections
                        .iter()
                        .position(|s| s.name.as_deref() == Some(name.text.as_str()))
                });
                if let (Some(index), Some(name)) = (existing, name) {
                    let first = &out.sections[index];
                    if first.section_type != section_type.text {
                        return Err(err(
                            name.pos,
                            format!(
                                "section '{}' was declared with type '{}' on line {}; one name \
                                 cannot have two types",
                                name.text, first.section_type, first.pos.line
                            ),
                        ));
                    }
                    out.repeated.push(RepeatedSection {
                        section_type: first.section_type.clone(),
                        name: name.text.clone(),
                        pos: keyword.pos,
                        first_line: first.pos.line,
                    });
                    current = Some(index);
                } else {
                    let type_index = out
                        .sections
                        .iter()
                        .filter(|s| s.section_type == section_type.text)
                        .count();
                    out.sections.push(Section {
                        section_type: section_type.text.clone(),
                        name: name.map(|n| n.text.clone()),
                        pos: keyword.pos,
                        type_index,
                        options: Vec::new(),
                    });
                    current = Some(out.sections.len() - 1);
                }
            }
            Some(what @ ("option" | "list")) => {
                let Some(index) = current else {
                    return Err(err(
                        keyword.pos,
                        format!(
                            "'{what}' outside a section; expected a 'config TYPE' line before it"
                        ),
                    ));
                };
                let Some(name) = words.get(1) else {
                    return Err(err(
                        keyword.pos,
                        format!("expected an option name after '{what}'"),
                    ));
                };
                if !valid_name(&name.text, false) {
                    return Err(err(
                        name.pos,
                        format!(
                            "invalid option name '{}'; expected letters, digits and '_'",
                            name.text
                        ),
                    ));
                }
                extra(&format!("the value of '{}'", name.text), 3)?;
                // A missing value is an empty one (libuci does the same).
                let value = match words.get(2) {
                    Some(value) => Value {
                        text: value.text.clone(),
                        pos: value.pos,
                    },
                    None => Value {
                        text: String::new(),
                        pos: name.pos,
                    },
                };
                let kind = if what == "list" {
                    OptionKind::List
                } else {
                    OptionKind::Option
                };
                let section = &mut out.sections[index];
                // libuci: setting an option to an empty value deletes it.
                if kind == OptionKind::Option && value.text.is_empty() {
                    section.options.retain(|o| o.name != name.text);
                    continue;
                }
                match section.options.iter_mut().find(|o| o.name == name.text) {
                    // A `list` line adds to what is there (turning an option into a list).
                    Some(existing) if kind == OptionKind::List => {
                        if existing.kind == OptionKind::Option {
                            existing.kind = OptionKind::List;
                        }
                        existing.values.push(value);
                        existing.pos = keyword.pos;
                    }
                    // An `option` line replaces what is there.
                    Some(existing) => {
                        existing.kind = kind;
                        existing.values = vec![value];
                        existing.pos = keyword.pos;
                    }
                    None => section.options.push(UciOption {
                        name: name.text.clone(),
                        pos: keyword.pos,
                        kind,
                        values: vec![value],
                    }),
                }
            }
            _ => {
                return Err(err(
                    keyword.pos,
                    format!(
                        "unknown keyword '{}'; expected 'package', 'config', 'option' or 'list' \
                         (unquoted)",
                        keyword.text
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> UciFile {
        match parse(text, "t") {
            Ok(f) => f,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse(text, "t") {
            Ok(f) => panic!("expected an error, parsed {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn value<'a>(f: &'a UciFile, section: &str, option: &str) -> &'a str {
        &f.section(section).unwrap().get(option).unwrap().values[0].text
    }

    #[test]
    fn package_named_and_anonymous_sections() {
        let f = ok(
            "package csipd\n\nconfig csipd 'main'\n\toption log_level info\n\
                    config device\n\toption role meter\nconfig device\n\toption role inverter\n",
        );
        let package = f.package.as_ref().unwrap();
        assert_eq!(package.text, "csipd");
        assert_eq!(package.pos, Pos { line: 1, col: 9 });
        assert_eq!(f.sections.len(), 3);
        assert_eq!(f.sections[0].address(), "main");
        assert_eq!(f.sections[1].address(), "@device[0]");
        assert_eq!(f.sections[2].address(), "@device[1]");
        assert_eq!(value(&f, "main", "log_level"), "info");
        assert_eq!(value(&f, "@device[1]", "role"), "inverter");
        assert_eq!(value(&f, "@device[-1]", "role"), "inverter");
        assert_eq!(value(&f, "@device[-2]", "role"), "meter");
        assert!(f.section("@device[2]").is_none());
        assert!(f.section("@device[-3]").is_none());
        assert_eq!(f.sections_of("device").count(), 2);
    }

    #[test]
    fn positions_of_values() {
        let f = ok("config limits fixed\n  option export_limit_w '5000'\n");
        let o = f.section("fixed").unwrap().get("export_limit_w").unwrap();
        assert_eq!(o.pos, Pos { line: 2, col: 3 });
        assert_eq!(o.values[0].pos, Pos { line: 2, col: 25 });
        assert_eq!(f.sections[0].pos, Pos { line: 1, col: 1 });
    }

    #[test]
    fn lists_accumulate_and_options_replace() {
        let f = ok("config tariff\n list days mon\n list days 'tue'\n option x 1\n option x 2\n");
        let s = &f.sections[0];
        let days = s.get("days").unwrap();
        assert_eq!(days.kind, OptionKind::List);
        let texts: Vec<&str> = days.values.iter().map(|v| v.text.as_str()).collect();
        assert_eq!(texts, ["mon", "tue"]);
        assert_eq!(days.values[1].pos, Pos { line: 3, col: 12 });
        let x = s.get("x").unwrap();
        assert_eq!(x.kind, OptionKind::Option);
        assert_eq!(x.values.len(), 1);
        assert_eq!(x.values[0].text, "2");
        assert_eq!(x.pos.line, 5);
    }

    #[test]
    fn list_after_option_extends_it() {
        let f = ok("config a\n option d mon\n list d tue\n");
        let d = f.sections[0].get("d").unwrap();
        assert_eq!(d.kind, OptionKind::List);
        assert_eq!(d.values.len(), 2);
    }

    #[test]
    fn single_quotes_are_literal() {
        let f = ok(r#"config a b
option v 'a "b" \n #not a comment; nor a separator'
"#);
        assert_eq!(
            value(&f, "b", "v"),
            r#"a "b" \n #not a comment; nor a separator"#
        );
    }

    #[test]
    fn double_quotes_take_backslash_escapes() {
        let f = ok(r#"config a b
option v "say \"hi\" \\ \$x 'q' #no ;no"
"#);
        assert_eq!(value(&f, "b", "v"), r#"say "hi" \ $x 'q' #no ;no"#);
    }

    #[test]
    fn adjacent_parts_concatenate() {
        let f = ok("config a b\noption v 'it'\\''s'\noption w ab\"c d\"'e f'g\n");
        assert_eq!(value(&f, "b", "v"), "it's");
        assert_eq!(value(&f, "b", "w"), "abc de fg");
    }

    #[test]
    fn unquoted_backslash_escapes_and_continues_lines() {
        let f = ok("config a b\noption v a\\ b\noption w \\\n  value\noption z 1\n");
        assert_eq!(value(&f, "b", "v"), "a b");
        assert_eq!(value(&f, "b", "w"), "value");
        assert_eq!(f.sections[0].get("w").unwrap().values[0].pos.line, 4);
        assert_eq!(value(&f, "b", "z"), "1");
    }

    #[test]
    fn multi_line_quoted_values() {
        let f = ok(
            "config a b\noption pem '-----BEGIN X-----\nAAAA\n-----END X-----'\noption n \"one\ntwo\"\noption after 1\n",
        );
        assert_eq!(
            value(&f, "b", "pem"),
            "-----BEGIN X-----\nAAAA\n-----END X-----"
        );
        assert_eq!(value(&f, "b", "n"), "one\ntwo");
        let after = f.sections[0].get("after").unwrap();
        assert_eq!(after.pos.line, 7);
    }

    #[test]
    fn comments_outside_quotes() {
        let f = ok(
            "# header\nconfig a b # trailing\n\t# indented\noption v x#comment\noption w 'y#z'\n",
        );
        assert_eq!(value(&f, "b", "v"), "x");
        assert_eq!(value(&f, "b", "w"), "y#z");
        assert_eq!(f.sections.len(), 1);
    }

    #[test]
    fn semicolons_separate_statements() {
        let f = ok("config a b; option v 1; option w '2;3' ;; list l x;list l y\n");
        assert_eq!(value(&f, "b", "v"), "1");
        assert_eq!(value(&f, "b", "w"), "2;3");
        assert_eq!(f.sections[0].get("l").unwrap().values.len(), 2);
    }

    #[test]
    fn crlf_and_no_final_newline() {
        let f = ok("config a b\r\noption f x\r\noption g last");
        assert_eq!(value(&f, "b", "f"), "x");
        assert_eq!(value(&f, "b", "g"), "last");
    }

    #[test]
    fn empty_option_value_deletes_the_option() {
        // libuci: `option x ''` (or no value at all) removes x; a list keeps empty items.
        let f =
            ok("config a b\noption e 1\noption e ''\noption f \"\"\noption g\nlist l\nlist l ''\n");
        let s = &f.sections[0];
        assert!(s.get("e").is_none());
        assert!(s.get("f").is_none());
        assert!(s.get("g").is_none());
        let l = s.get("l").unwrap();
        assert_eq!(l.values.len(), 2);
        assert_eq!(l.values[0].text, "");
        assert_eq!(l.values[0].pos, Pos { line: 6, col: 6 });
    }

    #[test]
    fn quoted_names_and_values() {
        let f = ok("config \"device\" 'inv1'\noption 'role' \"inverter\"\n");
        assert_eq!(f.sections[0].section_type, "device");
        assert_eq!(value(&f, "inv1", "role"), "inverter");
    }

    #[test]
    fn one_letter_keywords() {
        let f = ok("p csipd\nc device inv1\no role inverter\nl days mon\n");
        assert_eq!(f.package.as_ref().unwrap().text, "csipd");
        assert_eq!(value(&f, "inv1", "role"), "inverter");
        assert_eq!(value(&f, "inv1", "days"), "mon");
    }

    #[test]
    fn empty_section_name_is_anonymous() {
        let f = ok("config device ''\noption role meter\n");
        assert_eq!(f.sections[0].name, None);
        assert_eq!(value(&f, "@device[0]", "role"), "meter");
    }

    #[test]
    fn section_types_may_use_punctuation() {
        let f = ok("config dev-ice.x\n");
        assert_eq!(f.sections[0].section_type, "dev-ice.x");
    }

    #[test]
    fn repeated_named_section_merges() {
        let f = ok("config a x\noption v 1\nconfig a y\nconfig a x\noption w 2\n");
        assert_eq!(f.sections.len(), 2);
        assert_eq!(value(&f, "x", "v"), "1");
        assert_eq!(value(&f, "x", "w"), "2");
        assert_eq!(
            f.repeated,
            [RepeatedSection {
                section_type: "a".into(),
                name: "x".into(),
                pos: Pos { line: 4, col: 1 },
                first_line: 1,
            }]
        );
    }

    #[test]
    fn empty_file_and_only_comments() {
        assert_eq!(ok(""), UciFile::default());
        assert_eq!(ok("# nothing\n\n  \n;\n"), UciFile::default());
    }

    #[test]
    fn error_unterminated_single_quote() {
        assert_eq!(
            err("config a b\noption v 'abc\n"),
            "t:2:10: unterminated single quote; expected a closing ' before the end of the file"
        );
    }

    #[test]
    fn error_unterminated_double_quote() {
        assert_eq!(
            err("config a b\noption v \"abc\\\""),
            "t:2:10: unterminated double quote; expected a closing \" before the end of the file"
        );
    }

    #[test]
    fn error_backslash_at_end_of_file() {
        assert_eq!(
            err("config a b\noption v abc\\"),
            "t:2:13: backslash at the end of the file; expected a character after it"
        );
    }

    #[test]
    fn error_bad_section_name() {
        assert_eq!(
            err("config device 'inv-1'\n"),
            "t:1:15: invalid section name 'inv-1'; expected letters, digits and '_'"
        );
        assert_eq!(
            err("config device inv.1\n"),
            "t:1:15: invalid section name 'inv.1'; expected letters, digits and '_'"
        );
    }

    #[test]
    fn error_bad_section_type() {
        assert_eq!(
            err("config 'dev ice'\n"),
            "t:1:8: invalid section type 'dev ice'; expected printable characters without spaces"
        );
    }

    #[test]
    fn error_missing_section_type() {
        assert_eq!(
            err("\nconfig # nothing\n"),
            "t:2:1: expected a section type after 'config'"
        );
    }

    #[test]
    fn error_option_outside_section() {
        assert_eq!(
            err("package csipd\noption log_level info\n"),
            "t:2:1: 'option' outside a section; expected a 'config TYPE' line before it"
        );
        assert_eq!(
            err("  list days mon\n"),
            "t:1:3: 'list' outside a section; expected a 'config TYPE' line before it"
        );
    }

    #[test]
    fn error_bad_option_name() {
        assert_eq!(
            err("config a b\noption export-limit 5\n"),
            "t:2:8: invalid option name 'export-limit'; expected letters, digits and '_'"
        );
    }

    #[test]
    fn error_missing_option_name() {
        assert_eq!(
            err("config a b\noption\n"),
            "t:2:1: expected an option name after 'option'"
        );
        assert_eq!(
            err("config a b\nlist # comment\n"),
            "t:2:1: expected an option name after 'list'"
        );
    }

    #[test]
    fn error_extra_words() {
        assert_eq!(
            err("config a b\noption name two words\n"),
            "t:2:17: unexpected 'words' after the value of 'name'; expected the end of the line \
             (quote values that contain spaces)"
        );
        assert_eq!(
            err("config a b c\n"),
            "t:1:12: unexpected 'c' after the section name; expected the end of the line \
             (quote values that contain spaces)"
        );
        assert_eq!(
            err("package a b\n"),
            "t:1:11: unexpected 'b' after the package name; expected the end of the line \
             (quote values that contain spaces)"
        );
    }

    #[test]
    fn error_unknown_keyword() {
        assert_eq!(
            err("config a b\n  optoin v 1\n"),
            "t:2:3: unknown keyword 'optoin'; expected 'package', 'config', 'option' or 'list' \
             (unquoted)"
        );
        assert_eq!(
            err("'config' a b\n"),
            "t:1:1: unknown keyword 'config'; expected 'package', 'config', 'option' or 'list' \
             (unquoted)"
        );
        assert_eq!(
            err("x a b\n"),
            "t:1:1: unknown keyword 'x'; expected 'package', 'config', 'option' or 'list' \
             (unquoted)"
        );
    }

    #[test]
    fn error_package_problems() {
        assert_eq!(
            err("package\n"),
            "t:1:1: expected a package name after 'package'"
        );
        assert_eq!(
            err("package 'a b'\n"),
            "t:1:9: invalid package name 'a b'; expected letters, digits, '_' and '-'"
        );
        assert_eq!(
            err("package a\npackage b\n"),
            "t:2:1: a second 'package' line; the file already named package 'a' on line 1"
        );
    }

    #[test]
    fn error_same_name_two_types() {
        assert_eq!(
            err("config a x\nconfig b x\n"),
            "t:2:10: section 'x' was declared with type 'a' on line 1; one name cannot have \
             two types"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(
            err("config a b\noption v 'é' ü\n"),
            "t:2:14: unexpected 'ü' after the value of 'v'; expected the end of the line \
             (quote values that contain spaces)"
        );
    }
}
