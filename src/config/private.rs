//! The small files of `private/`: `convergence`, `secret` and `aliases`, read as Tahoe 1.20 reads
//! them (`client.py`, `node.py get_or_create_private_config`, `scripts/common.py get_aliases`).
//!
//! - `convergence` and `secret` are base32 text, stripped of surrounding whitespace, decoded with
//!   Tahoe's canonical base32 (`base32.a2b` asserts canonical input). Tahoe writes 32 bytes; it
//!   accepts any length when reading, and so does lafs. The values are secrets: [`Secret`]'s
//!   `Debug` hides them.
//! - `aliases`: one `name: cap` per line, split at the first `:`; the line is stripped, the cap
//!   is stripped, the name is **not** (so `a :x` names the alias `"a "`); empty lines and lines
//!   starting with `#` are skipped; a later line overrides an earlier one with the same name;
//!   `private/root_dir.cap`, if present and non-empty, is the `tahoe` alias (and the aliases file
//!   can override it). Lines break at Python's `str.splitlines` boundaries, as `codecs.open` does.
//!   A line without `:` makes Tahoe fail; here it is [`AliasError::NoColon`].
//! - The writer appends `name: cap\n` exactly as `tahoe add-alias` does, after checking that the
//!   name and cap survive the reader unchanged.

use crate::config::ini::py_strip;
use crate::util::base32;

/// The default alias (`DEFAULT_ALIAS`).
pub const DEFAULT_ALIAS: &str = "tahoe";

/// A secret from `private/` (convergence or lease secret). `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The file content Tahoe writes: base32 and a newline.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", base32::encode(&self.0))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// Errors of the `private/` files. They never contain the secret or cap text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivateError {
    #[error("the secret is not canonical Tahoe base32")]
    BadBase32,
    #[error("the file is not valid UTF-8")]
    NotUtf8,
}

/// Reads `private/convergence` or `private/secret`.
pub fn parse_secret(data: &[u8]) -> Result<Secret, PrivateError> {
    let text = std::str::from_utf8(data).map_err(|_| PrivateError::NotUtf8)?;
    let text = py_strip(text);
    base32::decode(text)
        .map(Secret)
        .ok_or(PrivateError::BadBase32)
}

/// Errors of the aliases file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("aliases line {line} has no ':'")]
    NoColon { line: usize },
    #[error("the aliases file is not valid UTF-8")]
    NotUtf8,
    #[error("an alias name must be non-empty, without ':', whitespace or line breaks, and not start with '#'")]
    BadName,
    #[error("an alias cap must be non-empty, without surrounding whitespace or line breaks")]
    BadCap,
}

/// The aliases of a node, in first-definition order. Caps are secrets: `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    entries: Vec<(String, String)>,
}

impl std::fmt::Debug for Aliases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.entries.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Aliases {
    /// Sets (or overrides, keeping its position) an alias.
    pub fn insert(&mut self, name: &str, cap: &str) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = cap.to_string(),
            None => self.entries.push((name.to_string(), cap.to_string())),
        }
    }

    /// The cap of an alias.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
    }

    /// `(name, cap)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, c)| (n.as_str(), c.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `get_aliases`: `root_dir_cap` is the content of `private/root_dir.cap` if it exists.
    pub fn parse(
        aliases_file: Option<&[u8]>,
        root_dir_cap: Option<&[u8]>,
    ) -> Result<Aliases, AliasError> {
        let mut out = Aliases::default();
        if let Some(root) = root_dir_cap {
            // Tahoe reads it in text mode; undecodable bytes make it fail, as here.
            let root = std::str::from_utf8(root).map_err(|_| AliasError::NotUtf8)?;
            let root = py_strip(root);
            if !root.is_empty() {
                out.insert(DEFAULT_ALIAS, root);
            }
        }
        let Some(data) = aliases_file else {
            return Ok(out);
        };
        let text = std::str::from_utf8(data).map_err(|_| AliasError::NotUtf8)?;
        for (idx, line) in py_splitlines(text).enumerate() {
            let line = py_strip(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, cap)) = line.split_once(':') else {
                return Err(AliasError::NoColon { line: idx + 1 });
            };
            out.insert(name, py_strip(cap));
        }
        Ok(out)
    }
}

/// Python's line boundaries for `str.splitlines` (and `codecs` readers).
fn is_py_linebreak(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// `str.splitlines()` without the line ends (`\r\n` is one break).
fn py_splitlines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(is_py_linebreak) {
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
            Some(i) => {
                let line = &rest[..i];
                let after = &rest[i..];
                let skip = if after.starts_with("\r\n") {
                    2
                } else {
                    after.chars().next().map_or(1, char::len_utf8)
                };
                rest = &after[skip..];
                Some(line)
            }
        }
    })
}

/// Checks that `name: cap` reads back as exactly that alias.
fn check_alias(name: &str, cap: &str) -> Result<(), AliasError> {
    let name_ok = !name.is_empty()
        && !name.starts_with('#')
        && !name.contains(':')
        && !name
            .chars()
            .any(|c| crate::config::ini::py_isspace(c) || is_py_linebreak(c));
    if !name_ok {
        return Err(AliasError::BadName);
    }
    let cap_ok = !cap.is_empty() && py_strip(cap) == cap && !cap.contains(is_py_linebreak);
    if !cap_ok {
        return Err(AliasError::BadCap);
    }
    Ok(())
}

/// `add_line_to_aliasfile`: the new file content after appending one alias to `existing` (the
/// current file text, empty if there is none).
pub fn append_alias(existing: &str, name: &str, cap: &str) -> Result<String, AliasError> {
    check_alias(name, cap)?;
    let mut out = existing.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(name);
    out.push_str(": ");
    out.push_str(cap);
    out.push('\n');
    Ok(out)
}

/// A whole aliases file for `aliases`, one line each, that Tahoe reads back as the same map.
pub fn write_aliases(aliases: &Aliases) -> Result<String, AliasError> {
    let mut out = String::new();
    for (name, cap) in aliases.iter() {
        out = append_alias(&out, name, cap)?;
    }
    Ok(out)
}
