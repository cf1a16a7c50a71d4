//! Directory-entry metadata: a JSON object kept as an insertion-ordered map, so keys written by
//! other clients (unknown to us) survive a rewrite untouched, in their original order.
//!
//! Tahoe's own keys live under `tahoe` (`linkcrtime`, `linkmotime`: float seconds since the epoch);
//! `tahoe backup` adds top-level `mtime`, `ctime` (floats) and `st_mode`, `st_uid`, `st_gid`,
//! `st_ino`, `st_dev` (integers); `no-write: true` makes a child read-only. The typed accessors
//! read and write those keys in place; everything else stays in the raw map.
//!
//! [`update_metadata`] is Tahoe's rule for add/overwrite/set-metadata (see its doc).

use super::pyjson;
use super::DirnodeError;
use serde_json::{Map, Value};

/// The metadata of one directory entry (a JSON object).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Empty metadata (`{}`).
    pub fn new() -> Self {
        Metadata(Map::new())
    }

    pub fn from_map(map: Map<String, Value>) -> Self {
        Metadata(map)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn as_map_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Parses stored metadata: it must be a JSON object (Tahoe asserts `isinstance(md, dict)`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, DirnodeError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Metadata(map)),
            Ok(_) => Err(DirnodeError::MetadataNotObject),
            Err(_) => Err(DirnodeError::MetadataNotJson),
        }
    }

    /// The JSON text Tahoe stores: Python's `json.dumps(metadata)`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        // Serialising through a borrowed Value would need a clone; write the object directly.
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&pyjson::dumps(&Value::String(k.clone())));
            out.push_str(": ");
            out.push_str(&pyjson::dumps(v));
        }
        out.push('}');
        out
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Sets `key`, keeping its position when it already exists (as a Python dict does).
    pub fn insert(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_string(), value);
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.shift_remove(key)
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.0.get(key).and_then(Value::as_f64)
    }

    fn tahoe_number(&self, key: &str) -> Option<f64> {
        self.0
            .get("tahoe")
            .and_then(Value::as_object)
            .and_then(|t| t.get(key))
            .and_then(Value::as_f64)
    }

    /// `tahoe.linkcrtime`: when this link was created (float seconds).
    pub fn linkcrtime(&self) -> Option<f64> {
        self.tahoe_number("linkcrtime")
    }

    /// `tahoe.linkmotime`: when this link was last modified (float seconds).
    pub fn linkmotime(&self) -> Option<f64> {
        self.tahoe_number("linkmotime")
    }

    /// `mtime` as `tahoe backup` writes it (float seconds).
    pub fn mtime(&self) -> Option<f64> {
        self.number("mtime")
    }

    /// `ctime` as `tahoe backup` writes it; also Tahoe < 1.4's name for `linkcrtime`.
    pub fn ctime(&self) -> Option<f64> {
        self.number("ctime")
    }

    pub fn set_mtime(&mut self, t: f64) {
        self.insert("mtime", float_value(t));
    }

    pub fn set_ctime(&mut self, t: f64) {
        self.insert("ctime", float_value(t));
    }

    fn int(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }

    pub fn st_mode(&self) -> Option<u64> {
        self.int("st_mode")
    }
    pub fn st_uid(&self) -> Option<u64> {
        self.int("st_uid")
    }
    pub fn st_gid(&self) -> Option<u64> {
        self.int("st_gid")
    }
    pub fn st_ino(&self) -> Option<u64> {
        self.int("st_ino")
    }
    pub fn st_dev(&self) -> Option<u64> {
        self.int("st_dev")
    }

    /// Sets one of the integer `st_*` keys (e.g. `"st_mode"`).
    pub fn set_int(&mut self, key: &str, v: u64) {
        self.insert(key, Value::from(v));
    }

    /// Python truthiness of `metadata.get('no-write', False)`.
    pub fn no_write(&self) -> bool {
        match self.0.get("no-write") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
        }
    }
}

/// A JSON float (serde_json turns non-finite floats into `null`, as Python cannot parse them
/// back as numbers either way; times are always finite).
fn float_value(t: f64) -> Value {
    serde_json::Number::from_f64(t).map_or(Value::Null, Value::Number)
}

/// Tahoe's `update_metadata(old, new, now)`, run by add, overwrite and set-metadata:
///
/// - with `new` given, its keys replace all old keys, except `tahoe`: any `tahoe` in `new` is
///   dropped and the old `tahoe` (if any) is kept, appended after the new keys;
/// - without `new`, the old metadata is kept as is;
/// - `tahoe.linkcrtime` is set when missing, from the old top-level `ctime` (Tahoe < 1.4) when that
///   is present and not null, else to `now`;
/// - `tahoe.linkmotime` is set to `now`.
///
/// A `tahoe` value that is not an object (Python would raise) is replaced by a fresh object.
pub fn update_metadata(old: Option<&Metadata>, new: Option<&Metadata>, now: f64) -> Metadata {
    let old_ctime = old
        .and_then(|m| m.0.get("ctime"))
        .filter(|v| !v.is_null())
        .cloned();
    let mut md = match new {
        Some(new) => {
            let mut md = new.clone();
            md.remove("tahoe");
            if let Some(t) = old.and_then(|m| m.0.get("tahoe")) {
                md.0.insert("tahoe".to_string(), t.clone());
            }
            md
        }
        None => old.cloned().unwrap_or_default(),
    };
    let mut sys = match md.0.get("tahoe") {
        Some(Value::Object(t)) => t.clone(),
        _ => Map::new(),
    };
    if !sys.contains_key("linkcrtime") {
        sys.insert(
            "linkcrtime".to_string(),
            old_ctime.unwrap_or_else(|| float_value(now)),
        );
    }
    sys.insert("linkmotime".to_string(), float_value(now));
    md.0.insert("tahoe".to_string(), Value::Object(sys));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(s: &str) -> Metadata {
        Metadata::from_json(s.as_bytes()).unwrap()
    }

    #[test]
    fn digest_example_round_trips() {
        let s = r#"{"note": "caf\u00e9", "tahoe": {"linkcrtime": 1795946854.2489998, "linkmotime": 1795946854.2489998}}"#;
        let m = md(s);
        assert_eq!(m.to_json(), s);
        assert_eq!(m.linkcrtime(), Some(1795946854.2489998));
        assert_eq!(m.get("note").and_then(Value::as_str), Some("café"));
    }

    #[test]
    fn must_be_object() {
        assert_eq!(
            Metadata::from_json(b"[1]"),
            Err(DirnodeError::MetadataNotObject)
        );
        assert_eq!(
            Metadata::from_json(b"{"),
            Err(DirnodeError::MetadataNotJson)
        );
        assert_eq!(md("{}").to_json(), "{}");
    }

    #[test]
    fn update_rules() {
        // Expected outputs follow Tahoe's update_metadata, traced by hand.
        // New link, no metadata: only the tahoe times.
        let m = update_metadata(None, None, 2.5);
        assert_eq!(
            m.to_json(),
            r#"{"tahoe": {"linkcrtime": 2.5, "linkmotime": 2.5}}"#
        );
        // New user keys replace old ones; old tahoe kept (moved after the new keys); tahoe in new ignored.
        let old =
            md(r#"{"tahoe": {"linkcrtime": 1.0, "linkmotime": 1.0, "x": 7}, "a": 1, "b": 2}"#);
        let new = md(r#"{"c": 3, "tahoe": {"linkcrtime": 99.0}, "a": 4}"#);
        let m = update_metadata(Some(&old), Some(&new), 3.0);
        assert_eq!(
            m.to_json(),
            r#"{"c": 3, "a": 4, "tahoe": {"linkcrtime": 1.0, "linkmotime": 3.0, "x": 7}}"#
        );
        // Legacy ctime becomes linkcrtime when tahoe.linkcrtime is missing.
        let old = md(r#"{"ctime": 10.5, "mtime": 11.0}"#);
        let m = update_metadata(Some(&old), None, 20.0);
        assert_eq!(
            m.to_json(),
            r#"{"ctime": 10.5, "mtime": 11.0, "tahoe": {"linkcrtime": 10.5, "linkmotime": 20.0}}"#
        );
        // ...even when the new metadata drops ctime.
        let m = update_metadata(Some(&old), Some(&md("{}")), 20.0);
        assert_eq!(
            m.to_json(),
            r#"{"tahoe": {"linkcrtime": 10.5, "linkmotime": 20.0}}"#
        );
        // Position of an existing tahoe key is kept when new is None.
        let old = md(r#"{"tahoe": {"linkmotime": 1.0}, "z": null}"#);
        let m = update_metadata(Some(&old), None, 5.0);
        assert_eq!(
            m.to_json(),
            r#"{"tahoe": {"linkmotime": 5.0, "linkcrtime": 5.0}, "z": null}"#
        );
    }

    #[test]
    fn typed_accessors() {
        let mut m = md(
            r#"{"mtime": 1234.5, "ctime": 1200, "st_mode": 33188, "st_ino": 18446744073709551615, "no-write": true, "x": "y"}"#,
        );
        assert_eq!(m.mtime(), Some(1234.5));
        assert_eq!(m.ctime(), Some(1200.0));
        assert_eq!(m.st_mode(), Some(33188));
        assert_eq!(m.st_ino(), Some(u64::MAX));
        assert_eq!(m.st_uid(), None);
        assert!(m.no_write());
        m.set_mtime(5.0);
        m.set_int("st_uid", 1000);
        assert_eq!(
            m.to_json(),
            r#"{"mtime": 5.0, "ctime": 1200, "st_mode": 33188, "st_ino": 18446744073709551615, "no-write": true, "x": "y", "st_uid": 1000}"#
        );
        assert!(!md(r#"{"no-write": 0}"#).no_write());
        assert!(!md(r#"{"no-write": ""}"#).no_write());
    }
}
