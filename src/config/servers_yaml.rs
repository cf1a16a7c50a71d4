//! `private/servers.yaml`: the static list of storage servers (digest §8, Tahoe's
//! `client.load_static_servers` and `StorageFarmBroker.set_static_servers`).
//!
//! Shape: `storage: {server_id: {ann: {...}, connections: ...}}`; other top-level keys are
//! ignored. Reading follows Tahoe's failure modes:
//! - a document that is not a mapping, a `storage` value that is not a mapping, or a server id
//!   that is not a string makes Tahoe fail to start, so they are [`ServersYamlError`]s;
//! - a single bad entry (no `ann`, an `ann` of the wrong shape, a non-ASCII id) is skipped by
//!   Tahoe, so here it lands in [`ServersYaml::skipped`] with the reason, and the others load;
//! - entries are kept sorted by server id (Tahoe processes them sorted).
//!
//! Announcement keys lafs does not model are kept in `other` and written back. The writer emits
//! only `storage:`, as JSON (a subset of YAML that quotes every string), so that PyYAML's
//! `safe_load` reads it back to the same data (plain YAML scalars like `yes` would turn into
//! booleans under YAML 1.1).
//! FURLs and NURLs contain swissnums (secrets): `Debug` hides them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Errors that make the whole file unusable (Tahoe would not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServersYamlError {
    /// YAML syntax error; the message comes from the YAML parser and holds only a position.
    #[error("servers.yaml is not valid YAML (line {line})")]
    Syntax { line: usize },
    #[error("servers.yaml is not a mapping")]
    NotAMapping,
    #[error("servers.yaml 'storage' is not a mapping")]
    StorageNotAMapping,
    #[error("servers.yaml has a server id that is not a string")]
    NonStringServerId,
    #[error("servers.yaml could not be serialized")]
    Serialize,
}

/// A storage announcement (the `ann` dict), as in the introducer protocol.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Announcement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(
        rename = "anonymous-storage-FURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub anonymous_storage_furl: Option<String>,
    #[serde(
        rename = "anonymous-storage-NURLs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub anonymous_storage_nurls: Option<Vec<String>>,
    #[serde(
        rename = "permutation-seed-base32",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub permutation_seed_base32: Option<String>,
    /// Every other key (`grid-manager-certificates`, `my-version`, ...), kept as is.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

impl std::fmt::Debug for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcement")
            .field("nickname", &self.nickname)
            .field(
                "anonymous_storage_furl",
                &self.anonymous_storage_furl.as_ref().map(|_| "<secret>"),
            )
            .field(
                "anonymous_storage_nurls",
                &self.anonymous_storage_nurls.as_ref().map(Vec::len),
            )
            .field("permutation_seed_base32", &self.permutation_seed_base32)
            .field("other_keys", &self.other.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One `storage:` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticServer {
    pub ann: Announcement,
    /// Per-server connection-handler overrides, e.g. `{tcp: tcp}`; kept opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<serde_yaml::Value>,
    /// Any other key of the entry.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServersYaml {
    /// Usable entries by server id, sorted.
    pub storage: BTreeMap<String, StaticServer>,
    /// Entries Tahoe would skip: `(server id, reason)`.
    pub skipped: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Out<'a> {
    storage: &'a BTreeMap<String, StaticServer>,
}

impl ServersYaml {
    /// Parses the file text.
    pub fn parse(text: &str) -> Result<ServersYaml, ServersYamlError> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ServersYamlError::Syntax {
                line: e.location().map_or(0, |l| l.line()),
            })?;
        let serde_yaml::Value::Mapping(top) = doc else {
            return Err(ServersYamlError::NotAMapping);
        };
        let mut out = ServersYaml::default();
        let Some(storage) = top.get("storage") else {
            return Ok(out);
        };
        let serde_yaml::Value::Mapping(storage) = storage else {
            return Err(ServersYamlError::StorageNotAMapping);
        };
        for (key, value) in storage {
            let serde_yaml::Value::String(id) = key else {
                return Err(ServersYamlError::NonStringServerId);
            };
            if !id.is_ascii() {
                out.skipped
                    .push((id.clone(), "server id is not ASCII".into()));
                continue;
            }
            match serde_yaml::from_value::<StaticServer>(value.clone()) {
                Ok(s) => {
                    out.storage.insert(id.clone(), s);
                }
                Err(_) => out
                    .skipped
                    .push((id.clone(), "entry has no usable 'ann' mapping".into())),
            }
        }
        Ok(out)
    }

    /// Parses file bytes (UTF-8).
    pub fn parse_bytes(data: &[u8]) -> Result<ServersYaml, ServersYamlError> {
        let text = std::str::from_utf8(data).map_err(|_| ServersYamlError::Syntax { line: 0 })?;
        Self::parse(text)
    }

    /// The file text: `storage:` with every usable entry.
    pub fn to_yaml_string(&self) -> Result<String, ServersYamlError> {
        // JSON is YAML, and it quotes every string: serde_yaml would write `yes` or `on` bare,
        // which PyYAML (YAML 1.1) reads back as booleans.
        serde_json::to_string_pretty(&Out {
            storage: &self.storage,
        })
        .map_err(|_| ServersYamlError::Serialize)
    }
}
