//! Command-line paths, read exactly as tahoe's `get_alias` reads them.
//!
//! - `URI:…` (also `ro.URI:`/`imm.URI:`): a cap; `CAP/a/b` (or the old `CAP:./a/b`) names a
//!   path under it.
//! - `alias:a/b`: a path under the directory of an alias of `private/aliases`.
//! - anything else, and `foo/bar:7` (a colon after a slash belongs to a name): a path under the
//!   default `tahoe:` alias.
//!
//! Paths are split on `/` with empty components dropped; whether the text ended with `/` is
//! kept, because `ln`/`mv` to `dir/` mean "into dir, under the source's name".
//! Caps are secrets: no error here contains the argument text when it holds a cap; alias names
//! and paths are shown, since they are the user's own words.

use anyhow::{anyhow, bail};
use lafs::cap::Cap;
use lafs::config::Aliases;

/// The default alias, `tahoe:`.
pub const DEFAULT_ALIAS: &str = "tahoe";

/// Where an argument points: a root cap and a path below it.
#[derive(Clone)]
pub struct Location {
    pub root: Cap,
    /// The path components below `root` (none: `root` itself).
    pub path: Vec<String>,
    /// The argument ended with `/`.
    pub trailing_slash: bool,
    /// Whether the argument was a bare cap (no alias, no path).
    pub bare_cap: bool,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Location {
    /// The path as text, `a/b`.
    pub fn path_text(&self) -> String {
        self.path.join("/")
    }

    /// The last component (the name the target has in its parent).
    pub fn name(&self) -> Option<&str> {
        self.path.last().map(String::as_str)
    }

    /// The location of the parent directory (the same root, one component less).
    pub fn parent(&self) -> Location {
        let mut p = self.clone();
        p.path.pop();
        p.trailing_slash = false;
        p.bare_cap = false;
        p
    }
}

/// Tahoe's `has_uri_prefix`.
fn has_uri_prefix(s: &str) -> bool {
    s.starts_with("URI:") || s.starts_with("ro.URI:") || s.starts_with("imm.URI:")
}

fn split_path(path: &str) -> (Vec<String>, bool) {
    let parts = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    (parts, path.ends_with('/'))
}

fn parse_cap(text: &str, what: &str) -> anyhow::Result<Cap> {
    match Cap::parse_strict(text) {
        Ok(Cap::Unknown(_)) => bail!("{what} is not a cap lafs can use"),
        Ok(cap) => Ok(cap),
        Err(e) => Err(anyhow!("{what} does not parse as a cap: {e}")),
    }
}

/// The directory cap of an alias (`uri.from_string_dirnode`: it must be a directory).
fn alias_root(aliases: &Aliases, alias: &str) -> anyhow::Result<Cap> {
    let Some(text) = aliases.get(alias) else {
        if alias == DEFAULT_ALIAS {
            bail!(
                "No alias specified, and the default '{DEFAULT_ALIAS}' alias doesn't exist. To create it, use 'tahoe create-alias {DEFAULT_ALIAS}'."
            );
        }
        bail!(
            "Unknown alias '{alias}', please create it with tahoe add-alias or tahoe create-alias."
        );
    };
    let cap = parse_cap(text.trim(), &format!("the cap of alias '{alias}'"))?;
    if !cap.is_directory() {
        bail!("alias '{alias}' does not name a directory");
    }
    Ok(cap)
}

/// Reads one path argument (tahoe's `get_alias` with the default alias `tahoe`).
pub fn parse_location(aliases: &Aliases, arg: &str) -> anyhow::Result<Location> {
    // Tahoe strips spaces around the argument.
    let arg = arg.trim_matches(' ');
    if has_uri_prefix(arg) {
        let (cap, rest) = match arg.find(":./") {
            Some(i) => (&arg[..i], Some(&arg[i + 3..])),
            None => match arg.find('/') {
                Some(i) => (&arg[..i], Some(&arg[i + 1..])),
                None => (arg, None),
            },
        };
        let root = parse_cap(cap, "the argument")?;
        let (path, trailing_slash) = split_path(rest.unwrap_or(""));
        return Ok(Location {
            root,
            bare_cap: rest.is_none(),
            path,
            trailing_slash,
        });
    }
    let (alias, rest) = match arg.split_once(':') {
        Some((alias, rest)) if !alias.contains('/') => (alias, rest),
        _ => (DEFAULT_ALIAS, arg),
    };
    let root = alias_root(aliases, alias)?;
    let (path, trailing_slash) = split_path(rest);
    Ok(Location {
        root,
        path,
        trailing_slash,
        bare_cap: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two well-formed directory caps written by hand: 16- and 32-byte fields are 26 and 52 base32
    // characters whose unused low bits are zero ('a').
    const DIR: &str =
        "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbba";
    const DIR_B: &str =
        "URI:DIR2:ccccccccccccccccccccccccca:ddddddddddddddddddddddddddddddddddddddddddddddddddda";

    fn aliases() -> Aliases {
        let mut a = Aliases::default();
        a.insert("tahoe", DIR);
        a.insert("work", DIR_B);
        a
    }

    fn root_text(l: &Location) -> String {
        l.root.to_string()
    }

    #[test]
    fn bare_path_uses_default_alias() {
        let l = parse_location(&aliases(), "a/b/c").unwrap();
        assert_eq!(root_text(&l), DIR);
        assert_eq!(l.path, ["a", "b", "c"]);
        assert!(!l.trailing_slash && !l.bare_cap);
    }

    #[test]
    fn alias_path() {
        let l = parse_location(&aliases(), "work:x/y/").unwrap();
        assert_eq!(root_text(&l), DIR_B);
        assert_eq!(l.path, ["x", "y"]);
        assert!(l.trailing_slash);
        let l = parse_location(&aliases(), "work:").unwrap();
        assert!(l.path.is_empty());
    }

    #[test]
    fn colon_after_slash_is_part_of_a_name() {
        let l = parse_location(&aliases(), "foo/bar:7").unwrap();
        assert_eq!(root_text(&l), DIR);
        assert_eq!(l.path, ["foo", "bar:7"]);
    }

    #[test]
    fn cap_and_cap_path() {
        let l = parse_location(&aliases(), DIR_B).unwrap();
        assert!(l.bare_cap && l.path.is_empty());
        assert_eq!(root_text(&l), DIR_B);
        let l = parse_location(&aliases(), &format!("{DIR_B}/p/q")).unwrap();
        assert!(!l.bare_cap);
        assert_eq!(l.path, ["p", "q"]);
        let l = parse_location(&aliases(), &format!("{DIR_B}:./p")).unwrap();
        assert_eq!(l.path, ["p"]);
    }

    #[test]
    fn unknown_alias_and_missing_default() {
        let e = parse_location(&aliases(), "nope:x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unknown alias 'nope'"), "{e}");
        let e = parse_location(&Aliases::default(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("default 'tahoe' alias"), "{e}");
    }

    #[test]
    fn bad_cap_error_hides_the_cap() {
        let bad = "URI:DIR2:secretsecretsecret";
        let e = format!("{:#}", parse_location(&aliases(), bad).unwrap_err());
        assert!(!e.contains("secretsecret"), "{e}");
    }
}
