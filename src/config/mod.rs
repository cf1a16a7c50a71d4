//! A Tahoe node directory, read exactly as Tahoe-LAFS 1.20 reads it.
//!
//! Layout (only the files lafs needs):
//! - `tahoe.cfg` — [`tahoe_cfg::NodeConfig`], over a configparser-compatible [`ini::Ini`];
//! - `private/convergence`, `private/secret` — [`private::Secret`]s;
//! - `private/aliases` (+ `private/root_dir.cap`) — [`private::Aliases`];
//! - `private/servers.yaml` — [`servers_yaml::ServersYaml`].
//!
//! Design: every parser is a pure function over `&str`/`&[u8]` (so each can be fuzzed), and
//! [`NodeDir::load`] is the only function here that touches the file system. A missing file is
//! not an error at this level (Tahoe creates `secret` and `convergence` on first start and treats
//! a missing `tahoe.cfg`, `aliases` or `servers.yaml` as empty), so the optional files are
//! `Option`s and the caller decides. Secrets and caps never reach `Debug` output or errors.

pub mod ini;
pub mod private;
pub mod servers_yaml;
pub mod tahoe_cfg;
pub mod tor;

pub use ini::{Ini, IniError};
pub use private::{AliasError, Aliases, PrivateError, Secret};
pub use servers_yaml::{Announcement, ServersYaml, ServersYamlError, StaticServer};
pub use tahoe_cfg::{CfgError, NodeConfig};

use std::path::{Path, PathBuf};

/// Errors of loading a node directory.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tahoe.cfg: {0}")]
    Cfg(#[from] CfgError),
    #[error("private/{file}: {source}")]
    Private {
        file: &'static str,
        #[source]
        source: PrivateError,
    },
    #[error("private/aliases: {0}")]
    Aliases(#[from] AliasError),
    #[error("private/servers.yaml: {0}")]
    ServersYaml(#[from] ServersYamlError),
}

/// The parsed contents of a node directory.
#[derive(Debug, Clone)]
pub struct NodeDir {
    pub basedir: PathBuf,
    pub config: NodeConfig,
    /// `private/convergence`, if it exists.
    pub convergence: Option<Secret>,
    /// `private/secret` (the lease secret), if it exists.
    pub lease_secret: Option<Secret>,
    pub aliases: Aliases,
    pub servers: ServersYaml,
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl NodeDir {
    /// Reads and parses every file of the node directory `basedir`.
    pub fn load(basedir: &Path) -> Result<NodeDir, ConfigError> {
        let private = basedir.join("private");
        let cfg = read_optional(&basedir.join("tahoe.cfg"))?.unwrap_or_default();
        let config = NodeConfig::parse_bytes(&cfg)?;
        let secret = |file: &'static str| -> Result<Option<Secret>, ConfigError> {
            read_optional(&private.join(file))?
                .map(|d| {
                    private::parse_secret(&d)
                        .map_err(|source| ConfigError::Private { file, source })
                })
                .transpose()
        };
        let convergence = secret("convergence")?;
        let lease_secret = secret("secret")?;
        let aliases_file = read_optional(&private.join("aliases"))?;
        let root_cap = read_optional(&private.join("root_dir.cap"))?;
        let aliases = Aliases::parse(aliases_file.as_deref(), root_cap.as_deref())?;
        let servers = match read_optional(&private.join("servers.yaml"))? {
            Some(d) => ServersYaml::parse_bytes(&d)?,
            None => ServersYaml::default(),
        };
        Ok(NodeDir {
            basedir: basedir.to_path_buf(),
            config,
            convergence,
            lease_secret,
            aliases,
            servers,
        })
    }
}

#[cfg(test)]
mod tests;
