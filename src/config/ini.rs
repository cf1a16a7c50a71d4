//! A reader for `tahoe.cfg` with the semantics of Python's `configparser.ConfigParser(strict=False)`
//! as Tahoe 1.20 uses it (`allmydata.util.configutil.get_config_from_string`, Python 3.11).
//!
//! What that means, rule by rule (each is a place where a "generic INI" crate differs):
//! - the text is UTF-8 with an optional BOM (`utf-8-sig`); lines split on `\n` only (a `\r` before
//!   it is whitespace and is stripped with the rest);
//! - a line whose stripped form starts with `#` or `;` is a comment; there are **no inline
//!   comments**: `key = a # b` has the value `a # b`;
//! - `[name]` opens a section; the name is everything between the first `[` and the **last** `]`
//!   (text after that `]` is ignored); section names are case-sensitive; `[DEFAULT]` holds
//!   defaults visible from every section; a repeated section is merged (strict=False);
//! - `key = value` or `key : value`, split at the first `=` or `:`; keys are lowercased
//!   (`optionxform`), both sides stripped; a repeated key overwrites the earlier value;
//! - a line indented deeper than the line that started the current option continues its value
//!   (joined with `\n`); blank lines inside a value are kept, trailing ones dropped;
//! - a key before any section header is `MissingSectionHeader`; a line with no delimiter, or an
//!   empty key, is a parse error;
//! - reading applies `BasicInterpolation`: `%%` is `%`, `%(name)s` is another option of the same
//!   section (or of `[DEFAULT]`), nested at most 10 deep, and any other `%` is an error.
//!
//! "Whitespace" is Python's `str.isspace`, which is wider than Rust's `char::is_whitespace`.
//! The parser is pure and never panics: every failure is an [`IniError`].

/// Errors of the `tahoe.cfg` reader. Values are never included (they may hold fURLs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    /// `configparser.MissingSectionHeaderError`.
    #[error("line {line}: option before any [section] header")]
    MissingSectionHeader { line: usize },
    /// `configparser.ParsingError`: a line that is neither a header, an option nor a comment.
    #[error("line {line}: cannot parse line")]
    Parse { line: usize },
    /// The file is not UTF-8.
    #[error("the file is not valid UTF-8")]
    NotUtf8,
    /// `InterpolationSyntaxError`: a stray `%`.
    #[error("[{section}]{option}: '%' must be followed by '%' or '(name)s'")]
    InterpolationSyntax { section: String, option: String },
    /// `InterpolationMissingOptionError`.
    #[error("[{section}]{option}: interpolation refers to a missing option")]
    InterpolationMissing { section: String, option: String },
    /// `InterpolationDepthError`: more than 10 nested references.
    #[error("[{section}]{option}: interpolation nested too deeply")]
    InterpolationDepth { section: String, option: String },
    /// `getboolean` on a value that is not one of 1/yes/true/on/0/no/false/off.
    #[error("[{section}]{option}: not a boolean")]
    NotBoolean { section: String, option: String },
}

/// The section holding defaults for every other section.
pub const DEFAULT_SECTION: &str = "DEFAULT";
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// Options as line lists before joining: `(name, lines)`.
type RawOptions = Vec<(String, Vec<String>)>;

/// An ordered map of options, in first-insertion order like Python's dict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    entries: Vec<(String, String)>,
}

impl Section {
    fn set(&mut self, key: String, value: String) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The raw (uninterpolated) value of `key`, already lowercased.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The options in file order, raw values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A parsed `tahoe.cfg`: every section and option, unknown ones included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    defaults: Section,
    sections: Vec<(String, Section)>,
}

/// Python's `str.isspace`.
pub(crate) fn py_isspace(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x20' | '\u{85}' | '\u{a0}')
        || (c > '\u{a0}' && c.is_whitespace())
}

/// Python's `str.strip()` with no argument.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

impl Ini {
    /// Parses file bytes: strips a UTF-8 BOM, then [`Ini::parse`].
    pub fn parse_bytes(data: &[u8]) -> Result<Ini, IniError> {
        let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
        let text = std::str::from_utf8(data).map_err(|_| IniError::NotUtf8)?;
        Ini::parse(text)
    }

    /// Parses the text of a `tahoe.cfg` (see the module doc for the exact rules).
    pub fn parse(text: &str) -> Result<Ini, IniError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ini = Ini::default();
        // Values are collected as line lists and joined at the end, as configparser does.
        let mut defaults: Vec<(String, Vec<String>)> = Vec::new();
        let mut sections: Vec<(String, RawOptions)> = Vec::new();
        // None: before any header; Some(None): [DEFAULT]; Some(Some(i)): sections[i].
        let mut cursect: Option<Option<usize>> = None;
        let mut optname: Option<String> = None;
        let mut indent_level = 0usize;
        let mut first_error: Option<IniError> = None;

        for (idx, line) in text.split_inclusive('\n').enumerate() {
            let lineno = idx + 1;
            let stripped = py_strip(line);
            let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
            let value = if is_comment { "" } else { stripped };
            if value.is_empty() {
                // empty_lines_in_values: a blank (non-comment) line extends the current value.
                if !is_comment {
                    if let (Some(cs), Some(name)) = (cursect, optname.as_deref()) {
                        if !name.is_empty() {
                            if let Some(vals) = option_lines(&mut defaults, &mut sections, cs, name)
                            {
                                vals.push(String::new());
                            }
                        }
                    }
                }
                continue;
            }
            let cur_indent = line.chars().take_while(|c| py_isspace(*c)).count();
            if let (Some(cs), Some(name)) = (cursect, optname.as_deref()) {
                if !name.is_empty() && cur_indent > indent_level {
                    if let Some(vals) = option_lines(&mut defaults, &mut sections, cs, name) {
                        vals.push(value.to_string());
                    }
                    continue;
                }
            }
            indent_level = cur_indent;
            if let Some(header) = section_header(value) {
                if header == DEFAULT_SECTION {
                    cursect = Some(None);
                } else if let Some(i) = sections.iter().position(|(n, _)| n == header) {
                    cursect = Some(Some(i));
                } else {
                    sections.push((header.to_string(), Vec::new()));
                    cursect = Some(Some(sections.len() - 1));
                }
                optname = None;
                continue;
            }
            let Some(cs) = cursect else {
                return Err(IniError::MissingSectionHeader { line: lineno });
            };
            match split_option(value) {
                Some((name, val)) => {
                    if name.is_empty() && first_error.is_none() {
                        first_error = Some(IniError::Parse { line: lineno });
                    }
                    let name = name.to_lowercase();
                    let opts = match cs {
                        None => &mut defaults,
                        Some(i) => match sections.get_mut(i) {
                            Some(s) => &mut s.1,
                            None => continue,
                        },
                    };
                    match opts.iter_mut().find(|(k, _)| *k == name) {
                        Some(slot) => slot.1 = vec![val.to_string()],
                        None => opts.push((name.clone(), vec![val.to_string()])),
                    }
                    optname = Some(name);
                }
                None => {
                    if first_error.is_none() {
                        first_error = Some(IniError::Parse { line: lineno });
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let join = |opts: Vec<(String, Vec<String>)>| {
            let mut s = Section::default();
            for (k, lines) in opts {
                let joined = lines.join("\n");
                s.set(k, joined.trim_end_matches(py_isspace).to_string());
            }
            s
        };
        ini.defaults = join(defaults);
        ini.sections = sections.into_iter().map(|(n, o)| (n, join(o))).collect();
        Ok(ini)
    }

    /// Section names in file order (without `DEFAULT`), like `ConfigParser.sections()`.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(n, _)| n.as_str())
    }

    /// A section (without the defaults merged in).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// The `[DEFAULT]` section.
    pub fn defaults(&self) -> &Section {
        &self.defaults
    }

    /// `ConfigParser.options(section)`: the section's keys then the defaults' keys not in it.
    pub fn options(&self, section: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let Some(s) = self.section(section) {
            out.extend(s.iter().map(|(k, _)| k));
        }
        for (k, _) in self.defaults.iter() {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// The raw value, falling back to `[DEFAULT]`; `None` if the section or option is missing
    /// (configparser's NoSectionError/NoOptionError, which Tahoe turns into the default).
    pub fn get_raw(&self, section: &str, option: &str) -> Option<&str> {
        let s = self.section(section)?;
        let option = option.to_lowercase();
        s.get(&option).or_else(|| self.defaults.get(&option))
    }

    /// `ConfigParser.get`: the value with `BasicInterpolation` applied.
    pub fn get(&self, section: &str, option: &str) -> Result<Option<String>, IniError> {
        let Some(raw) = self.get_raw(section, option) else {
            return Ok(None);
        };
        let mut out = String::new();
        self.interpolate(section, option, raw, 1, &mut out)?;
        Ok(Some(out))
    }

    /// `ConfigParser.getboolean`.
    pub fn get_bool(&self, section: &str, option: &str) -> Result<Option<bool>, IniError> {
        let Some(v) = self.get(section, option)? else {
            return Ok(None);
        };
        match v.to_lowercase().as_str() {
            "1" | "yes" | "true" | "on" => Ok(Some(true)),
            "0" | "no" | "false" | "off" => Ok(Some(false)),
            _ => Err(IniError::NotBoolean {
                section: section.to_string(),
                option: option.to_string(),
            }),
        }
    }

    fn interpolate(
        &self,
        section: &str,
        option: &str,
        mut rest: &str,
        depth: usize,
        out: &mut String,
    ) -> Result<(), IniError> {
        let err_ctx = || (section.to_string(), option.to_string());
        if depth > MAX_INTERPOLATION_DEPTH {
            let (section, option) = err_ctx();
            return Err(IniError::InterpolationDepth { section, option });
        }
        while !rest.is_empty() {
            let Some(p) = rest.find('%') else {
                out.push_str(rest);
                return Ok(());
            };
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            let after = &rest[1..];
            if let Some(r) = after.strip_prefix('%') {
                out.push('%');
                rest = r;
            } else if let Some(r) = after.strip_prefix('(') {
                // _KEYCRE = %\(([^)]+)\)s
                let close = r.find(')');
                let (name, tail) = match close {
                    Some(c) if c > 0 && r[c + 1..].starts_with('s') => (&r[..c], &r[c + 2..]),
                    _ => {
                        let (section, option) = err_ctx();
                        return Err(IniError::InterpolationSyntax { section, option });
                    }
                };
                let Some(value) = self.get_raw(section, name) else {
                    let (section, option) = err_ctx();
                    return Err(IniError::InterpolationMissing { section, option });
                };
                rest = tail;
                if value.contains('%') {
                    self.interpolate(section, option, value, depth + 1, out)?;
                } else {
                    out.push_str(value);
                }
            } else {
                let (section, option) = err_ctx();
                return Err(IniError::InterpolationSyntax { section, option });
            }
        }
        Ok(())
    }
}

fn option_lines<'a>(
    defaults: &'a mut [(String, Vec<String>)],
    sections: &'a mut [(String, RawOptions)],
    cs: Option<usize>,
    name: &str,
) -> Option<&'a mut Vec<String>> {
    let opts: &mut [(String, Vec<String>)] = match cs {
        None => defaults,
        Some(i) => &mut sections.get_mut(i)?.1,
    };
    opts.iter_mut().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// SECTCRE `\[(?P<header>.+)\]` matched at the start of the stripped line: the header runs to
/// the last `]` and must not be empty.
fn section_header(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    if close == 0 {
        // "[]" alone; but "[]]" has header "]" (rfind found the last one, so close > 0 there).
        return None;
    }
    Some(&inner[..close])
}

/// OPTCRE `(?P<option>.*?)\s*(?P<vi>=|:)\s*(?P<value>.*)$`: split at the first delimiter.
fn split_option(value: &str) -> Option<(&str, &str)> {
    let d = value.find(['=', ':'])?;
    let name = value[..d].trim_end_matches(py_isspace);
    let val = py_strip(&value[d + 1..]);
    Some((name, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_semantics() {
        let text = "# comment\n[node]\nNickName = a # not a comment\n; c\nweb.port: tcp:3456\n\
                    multi = one\n  two\n\n   three\n\n\nafter = x\n[node]\nafter = y\n";
        let ini = Ini::parse(text).unwrap();
        assert_eq!(
            ini.get("node", "nickname").unwrap().as_deref(),
            Some("a # not a comment")
        );
        assert_eq!(
            ini.get("node", "NICKNAME").unwrap().as_deref(),
            Some("a # not a comment")
        );
        // First delimiter wins: "web.port" ":" "tcp:3456".
        assert_eq!(
            ini.get("node", "web.port").unwrap().as_deref(),
            Some("tcp:3456")
        );
        assert_eq!(
            ini.get("node", "multi").unwrap().as_deref(),
            Some("one\ntwo\n\nthree")
        );
        assert_eq!(ini.get("node", "after").unwrap().as_deref(), Some("y"));
        assert_eq!(ini.sections().collect::<Vec<_>>(), vec!["node"]);
    }

    #[test]
    fn headers_defaults_interpolation() {
        let ini = Ini::parse("[DEFAULT]\nbase = /x\n[a]b]junk\nk = %(base)s/y %%\n[s]\n").unwrap();
        assert_eq!(ini.sections().collect::<Vec<_>>(), vec!["a]b", "s"]);
        assert_eq!(ini.get("a]b", "k").unwrap().as_deref(), Some("/x/y %"));
        assert_eq!(ini.get("s", "base").unwrap().as_deref(), Some("/x"));
        assert_eq!(ini.get("nosuch", "base").unwrap(), None);
        let bad = Ini::parse("[s]\nk = 100%\n").unwrap();
        assert!(matches!(
            bad.get("s", "k"),
            Err(IniError::InterpolationSyntax { .. })
        ));
        let missing = Ini::parse("[s]\nk = %(zz)s\n").unwrap();
        assert!(matches!(
            missing.get("s", "k"),
            Err(IniError::InterpolationMissing { .. })
        ));
        let deep = Ini::parse("[s]\nk = %(k)s\n").unwrap();
        assert!(matches!(
            deep.get("s", "k"),
            Err(IniError::InterpolationDepth { .. })
        ));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Ini::parse("k = v\n"),
            Err(IniError::MissingSectionHeader { line: 1 })
        );
        assert_eq!(Ini::parse("[s]\njunk\n"), Err(IniError::Parse { line: 2 }));
        assert_eq!(Ini::parse("[s]\n= v\n"), Err(IniError::Parse { line: 2 }));
        assert_eq!(
            Ini::parse("[]\n"),
            Err(IniError::MissingSectionHeader { line: 1 })
        );
        assert!(Ini::parse("\u{feff}[s]\r\nk = v\r\n").is_ok());
        assert_eq!(Ini::parse_bytes(b"[s]\n\xff = 1\n"), Err(IniError::NotUtf8));
    }

    #[test]
    fn booleans() {
        let ini = Ini::parse("[s]\na = On\nb = 0\nc = maybe\n").unwrap();
        assert_eq!(ini.get_bool("s", "a").unwrap(), Some(true));
        assert_eq!(ini.get_bool("s", "b").unwrap(), Some(false));
        assert!(ini.get_bool("s", "c").is_err());
        assert_eq!(ini.get_bool("s", "d").unwrap(), None);
    }
}
