//! The Tor options of a node directory: `[connections] tcp`, `[tor]`, `[node] reveal-IP-address`
//! of `tahoe.cfg`, and where the arti configuration of the node lives.
//!
//! lafs reaches Tor through an in-process arti client (cargo feature `tor`), not through a Tor
//! daemon. Tahoe's options are read with that in mind:
//! - `[connections] tcp = tcp` (default) dials plain-TCP NURLs directly; `tcp = tor` sends every
//!   TCP connection through Tor; `tcp = disabled` refuses plain-TCP NURLs. Any other value
//!   (`i2p`, a typo) is refused, as Tahoe refuses an unknown handler;
//! - `[tor] enabled` (default true): `false` turns Tor off, so `pb+tor://` NURLs are refused, and
//!   `tcp = tor` is an error (Tahoe: a disabled handler);
//! - `[node] reveal-IP-address = false` requires `tcp = tor` or `tcp = disabled` (Tahoe's
//!   `PrivacyError`);
//! - `[tor] launch`, `tor.executable`, `socks.port`, `control.port` configure an external Tor
//!   daemon; arti runs in-process, so they are accepted (Tahoe knows them) and reported in
//!   [`TorOptions::ignored`] for a warning;
//! - `[tor] onion = true` (server side, cargo feature `tor`): `lafs run` hosts the storage
//!   node's onion service itself, in-process with arti, and serves the onion streams for virtual
//!   port `onion.external_port` directly (no loopback hop). The identity key is Tahoe's
//!   `onion.private_key_file` (default `private/tor_onion.privkey`, C-tor's `ED25519-V3:<base64
//!   of the 64-byte expanded secret key>` as Tahoe writes it), created when missing, so a Tahoe
//!   node directory keeps its `.onion` address. The node announces `tor:ONION.onion:EXTERNAL`
//!   (added to `tub.location` hints when no hint names that address), i.e. a `pb+tor://` NURL.
//!   `onion.local_port` is where Tahoe's Tor daemon forwards to; lafs does not need it (it still
//!   binds `tub.port`, which Tahoe sets to that port on loopback). Tahoe requires
//!   `onion.external_port` and so does lafs;
//!
//! The arti configuration (a private Tor network: directory authorities, fallback caches, relaxed
//! path rules) is arti's own TOML format in the optional file [`ARTI_CONFIG_FILE`]
//! (`private/arti.toml`) of the node directory; a lafs-specific key in `tahoe.cfg` would make
//! Tahoe refuse the file. Its state and cache directories default to [`ARTI_STATE_DIR`] and
//! [`ARTI_CACHE_DIR`] under the node directory.
//!
//! Invariant: parsing is pure (no I/O); errors name options, never values.

use super::ini::Ini;

/// The arti configuration file, relative to the node directory.
pub const ARTI_CONFIG_FILE: &str = "private/arti.toml";
/// arti's state directory (guards, keys), relative to the node directory.
pub const ARTI_STATE_DIR: &str = "private/arti/state";
/// arti's cache directory (directory documents), relative to the node directory.
pub const ARTI_CACHE_DIR: &str = "private/arti/cache";

/// Errors in the Tor options of `tahoe.cfg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TorConfigError {
    /// A boolean option is not a boolean.
    #[error("[{section}]{option}: not a boolean")]
    BadBool {
        section: &'static str,
        option: &'static str,
    },
    /// `[connections] tcp` names a handler lafs does not have.
    #[error("[connections]tcp: unknown or unsupported handler (use tcp, tor or disabled)")]
    UnknownHandler,
    /// A port option is not a port number.
    #[error("[tor]{0}: not a port number")]
    BadPort(&'static str),
    /// `[tor] onion = true` without a required `onion.*` option.
    #[error("[tor]onion = true, but {0} is missing")]
    OnionMissing(&'static str),
    /// `[tor] onion = true` with `[tor] enabled = false`.
    #[error("[tor]onion = true, but [tor]enabled is false")]
    OnionDisabled,
    /// `[connections] tcp = tor` with `[tor] enabled = false`.
    #[error("[connections]tcp = tor, but [tor]enabled is false")]
    TorDisabled,
    /// `reveal-IP-address = false` with direct TCP (Tahoe's `PrivacyError`).
    #[error(
        "[node]reveal-IP-address = false requires [connections]tcp = tor (or disabled), but it is tcp"
    )]
    Privacy,
}

/// How plain-TCP (`pb://`) NURLs are dialled: `[connections] tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpHandler {
    /// Directly (the default).
    #[default]
    Direct,
    /// Through Tor.
    Tor,
    /// Not at all.
    Disabled,
}

/// The onion service of a storage node: `[tor] onion = true` and its `onion.*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnionOptions {
    /// `onion.external_port`: the virtual port announced and served.
    pub external_port: u16,
    /// `onion.local_port` (Tahoe's Tor daemon forwards there; lafs serves in-process).
    pub local_port: Option<u16>,
    /// `onion.private_key_file`, relative to the node directory (default [`ONION_KEY_FILE`]).
    pub private_key_file: String,
}

/// Where Tahoe's `create-node --listen=tor` puts the onion key, relative to the node directory.
pub const ONION_KEY_FILE: &str = "private/tor_onion.privkey";

/// The Tor-related options of `tahoe.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorOptions {
    /// `[tor] enabled`.
    pub enabled: bool,
    /// `[connections] tcp`.
    pub tcp: TcpHandler,
    /// `[node] reveal-IP-address`.
    pub reveal_ip: bool,
    /// `[tor]` options that configure a Tor daemon, which arti does not use.
    pub ignored: Vec<&'static str>,
    /// `[tor] onion = true`: host the node's onion service.
    pub onion: Option<OnionOptions>,
}

impl Default for TorOptions {
    fn default() -> Self {
        TorOptions {
            enabled: true,
            tcp: TcpHandler::Direct,
            reveal_ip: true,
            ignored: Vec::new(),
            onion: None,
        }
    }
}

const DAEMON_OPTIONS: &[&str] = &["launch", "tor.executable", "socks.port", "control.port"];

impl TorOptions {
    /// Reads the options from a parsed `tahoe.cfg`.
    pub fn from_ini(ini: &Ini) -> Result<TorOptions, TorConfigError> {
        let boolean = |section: &'static str, option: &'static str, default: bool| {
            ini.get_bool(section, option)
                .map(|v| v.unwrap_or(default))
                .map_err(|_| TorConfigError::BadBool { section, option })
        };
        let enabled = boolean("tor", "enabled", true)?;
        let reveal_ip = boolean("node", "reveal-ip-address", true)?;
        let tcp = match ini.get("connections", "tcp") {
            Ok(None) => TcpHandler::Direct,
            Ok(Some(v)) => match v.trim().to_ascii_lowercase().as_str() {
                "tcp" => TcpHandler::Direct,
                "tor" => TcpHandler::Tor,
                "disabled" => TcpHandler::Disabled,
                _ => return Err(TorConfigError::UnknownHandler),
            },
            Err(_) => return Err(TorConfigError::UnknownHandler),
        };
        if tcp == TcpHandler::Tor && !enabled {
            return Err(TorConfigError::TorDisabled);
        }
        if !reveal_ip && tcp == TcpHandler::Direct {
            return Err(TorConfigError::Privacy);
        }
        let ignored = DAEMON_OPTIONS
            .iter()
            .copied()
            .filter(|o| ini.get_raw("tor", o).is_some())
            .collect();
        let port = |option: &'static str| -> Result<Option<u16>, TorConfigError> {
            match ini.get("tor", option) {
                Ok(None) => Ok(None),
                Ok(Some(v)) if v.trim().is_empty() => Ok(None),
                Ok(Some(v)) => v
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .map(Some)
                    .ok_or(TorConfigError::BadPort(option)),
                Err(_) => Err(TorConfigError::BadPort(option)),
            }
        };
        let onion = if boolean("tor", "onion", false)? {
            if !enabled {
                return Err(TorConfigError::OnionDisabled);
            }
            let external_port = port("onion.external_port")?
                .ok_or(TorConfigError::OnionMissing("onion.external_port"))?;
            let private_key_file = ini
                .get("tor", "onion.private_key_file")
                .ok()
                .flatten()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| ONION_KEY_FILE.to_string());
            Some(OnionOptions {
                external_port,
                local_port: port("onion.local_port")?,
                private_key_file,
            })
        } else {
            None
        };
        Ok(TorOptions {
            enabled,
            tcp,
            reveal_ip,
            ignored,
            onion,
        })
    }

    /// Whether a NURL needs Tor under these options: `pb+tor://`, an `.onion` host, or any NURL
    /// with `tcp = tor`.
    pub fn wants_tor(&self, scheme_tor: bool, host: &str) -> bool {
        scheme_tor || is_onion(host) || self.tcp == TcpHandler::Tor
    }
}

/// Whether `host` is an onion address (`*.onion`, case-insensitive, a trailing dot allowed).
pub fn is_onion(host: &str) -> bool {
    host.trim_end_matches('.')
        .to_ascii_lowercase()
        .ends_with(".onion")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(text: &str) -> Result<TorOptions, TorConfigError> {
        TorOptions::from_ini(&Ini::parse(text).unwrap())
    }

    #[test]
    fn defaults_are_tahoes() {
        // Tahoe's defaults: Tor enabled (used for tor: hints), direct TCP, IP revealed.
        assert_eq!(opts("").unwrap(), TorOptions::default());
        assert_eq!(
            opts("[node]\nnickname = x\n").unwrap(),
            TorOptions::default()
        );
    }

    #[test]
    fn tcp_handlers() {
        assert_eq!(
            opts("[connections]\ntcp = tor\n").unwrap().tcp,
            TcpHandler::Tor
        );
        assert_eq!(
            opts("[connections]\ntcp = disabled\n").unwrap().tcp,
            TcpHandler::Disabled
        );
        assert_eq!(
            opts("[connections]\ntcp = tcp\n").unwrap().tcp,
            TcpHandler::Direct
        );
        assert_eq!(
            opts("[connections]\ntcp = i2p\n"),
            Err(TorConfigError::UnknownHandler)
        );
        assert_eq!(
            opts("[connections]\ntcp = socks\n"),
            Err(TorConfigError::UnknownHandler)
        );
    }

    #[test]
    fn privacy_and_disabled_tor() {
        // Tahoe's PrivacyError: not revealing the IP address needs tcp = tor (or disabled).
        assert_eq!(
            opts("[node]\nreveal-IP-address = false\n"),
            Err(TorConfigError::Privacy)
        );
        let o = opts("[node]\nreveal-IP-address = false\n[connections]\ntcp = tor\n").unwrap();
        assert!(!o.reveal_ip);
        assert_eq!(o.tcp, TcpHandler::Tor);
        assert!(opts("[node]\nreveal-IP-address = False\n[connections]\ntcp = disabled\n").is_ok());
        assert_eq!(
            opts("[tor]\nenabled = false\n[connections]\ntcp = tor\n"),
            Err(TorConfigError::TorDisabled)
        );
        assert!(!opts("[tor]\nenabled = no\n").unwrap().enabled);
        assert_eq!(
            opts("[tor]\nenabled = maybe\n"),
            Err(TorConfigError::BadBool {
                section: "tor",
                option: "enabled"
            })
        );
    }

    #[test]
    fn daemon_options_are_reported_ignored() {
        let o = opts(
            "[tor]\nlaunch = true\nsocks.port = tcp:127.0.0.1:9050\nonion = true\nonion.local_port = 3457\nonion.external_port = 3457\n",
        )
        .unwrap();
        assert_eq!(o.ignored, vec!["launch", "socks.port"]);
    }

    #[test]
    fn onion_service_options() {
        // Tahoe's `create-node --listen=tor` section.
        let o = opts(
            "[tor]\nlaunch = true\nonion = true\nonion.local_port = 3457\nonion.external_port = 3457\nonion.private_key_file = private/tor_onion.privkey\n",
        )
        .unwrap();
        assert_eq!(
            o.onion,
            Some(OnionOptions {
                external_port: 3457,
                local_port: Some(3457),
                private_key_file: "private/tor_onion.privkey".into(),
            })
        );
        let o = opts("[tor]\nonion = True\nonion.external_port = 80\n").unwrap();
        let onion = o.onion.unwrap();
        assert_eq!(onion.private_key_file, ONION_KEY_FILE);
        assert_eq!(onion.local_port, None);
        assert_eq!(
            opts("[tor]\nonion = false\nonion.external_port = 80\n")
                .unwrap()
                .onion,
            None
        );
        assert_eq!(
            opts("[tor]\nonion = true\n"),
            Err(TorConfigError::OnionMissing("onion.external_port"))
        );
        assert_eq!(
            opts("[tor]\nonion = true\nonion.external_port = 65536\n"),
            Err(TorConfigError::BadPort("onion.external_port"))
        );
        assert_eq!(
            opts("[tor]\nonion = true\nonion.external_port = 80\nonion.local_port = x\n"),
            Err(TorConfigError::BadPort("onion.local_port"))
        );
        assert_eq!(
            opts("[tor]\nenabled = false\nonion = true\nonion.external_port = 80\n"),
            Err(TorConfigError::OnionDisabled)
        );
    }

    #[test]
    fn onion_hosts() {
        assert!(is_onion("abc.onion"));
        assert!(is_onion("ABC.ONION."));
        assert!(!is_onion("onion.example"));
        assert!(!is_onion("127.0.0.1"));
        let o = TorOptions::default();
        assert!(o.wants_tor(true, "example.com"));
        assert!(o.wants_tor(false, "x.onion"));
        assert!(!o.wants_tor(false, "example.com"));
        let all = TorOptions {
            tcp: TcpHandler::Tor,
            ..TorOptions::default()
        };
        assert!(all.wants_tor(false, "example.com"));
    }
}
