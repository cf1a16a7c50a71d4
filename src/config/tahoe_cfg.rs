//! The typed view of `tahoe.cfg`, read the way Tahoe 1.20 reads it (`node.py`, `client.py`,
//! `util/abbreviate.py`, `util/time_format.py`).
//!
//! Invariants and choices:
//! - the raw [`Ini`] is kept whole in [`NodeConfig::ini`], so keys lafs does not model are never
//!   lost; [`validate_sections`] reports the sections and options Tahoe's `validate_config` would
//!   refuse (it refuses unknown ones at start-up), and [`NodeConfig::parse`] applies it, like Tahoe;
//! - defaults are Tahoe's: `nickname` `<unspecified>`, `k=3, happy=7, N=10`, SDMF, a 1 MiB
//!   maximum immutable segment, storage enabled, `reserved_space` 0, expiration off in `age` mode;
//! - the `[storage]` values are only interpreted when storage is enabled, because Tahoe only reads
//!   them then (a broken `reserved_space` on a client-only node is not an error);
//! - integers are read with Python's `int()` rules (surrounding whitespace, a sign, `_` between
//!   digits), sizes with `parse_abbreviated_size`, durations with `parse_duration` and dates with
//!   `parse_date`;
//! - lafs adds one check Tahoe makes only at upload time: `1 <= k <= N <= 256` and `happy <= N`.
//!
//! Errors never contain values: a `.furl` value is a secret.

use super::ini::{py_strip, Ini, IniError};

/// Errors in `tahoe.cfg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CfgError {
    /// The INI layer failed.
    #[error(transparent)]
    Ini(#[from] IniError),
    /// `UnknownConfigError`: a section Tahoe does not know.
    #[error("unknown section [{0}]")]
    UnknownSection(String),
    /// `UnknownConfigError`: an option Tahoe does not know in a known section.
    #[error("section [{section}] contains unknown option '{option}'")]
    UnknownOption { section: String, option: String },
    /// `UnescapedHashError`: a `*.furl` value contains `#`.
    #[error(
        "[{section}]{option}: a fURL must not contain '#' (inline comments are not supported)"
    )]
    UnescapedHash { section: String, option: String },
    /// A value that must be an integer is not.
    #[error("[{section}]{option}: not an integer")]
    NotInteger { section: String, option: String },
    /// A size (`reserved_space`) that `parse_abbreviated_size` refuses.
    #[error("[{section}]{option}: unparseable size")]
    BadSize { section: String, option: String },
    /// A duration that `parse_duration` refuses.
    #[error("[{section}]{option}: unparseable duration (need a day, month or year unit)")]
    BadDuration { section: String, option: String },
    /// A date that `parse_date` refuses.
    #[error("[{section}]{option}: unparseable date (need YYYY-MM-DD)")]
    BadDate { section: String, option: String },
    /// `expire.mode` is neither `age` nor `cutoff-date`.
    #[error("[storage]expire.mode must be 'age' or 'cutoff-date'")]
    BadExpireMode,
    /// A required option is missing (`MissingConfigEntry`).
    #[error("missing the [{section}]{option} entry")]
    Missing { section: String, option: String },
    /// The encoding parameters are out of range.
    #[error(
        "bad encoding parameters k={k} happy={happy} N={n}: need 1 <= k <= N <= 256, happy <= N"
    )]
    BadEncoding { k: i64, happy: i64, n: i64 },
}

/// The default format for new mutable files (`[client]mutable.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutableFormat {
    Sdmf,
    Mdmf,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    pub nickname: String,
    pub tub_port: Option<String>,
    pub tub_location: Option<String>,
    pub web_port: Option<String>,
}

/// `[client]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSection {
    /// A secret (it lets anyone join the grid); not shown by `Debug`.
    pub introducer_furl: Option<String>,
    /// A secret; `None` also for the values `""` and `"None"`, as Tahoe does.
    pub helper_furl: Option<String>,
    pub shares_needed: u16,
    pub shares_happy: u16,
    pub shares_total: u16,
    pub mutable_format: MutableFormat,
    /// `shares._max_immutable_segment_size_for_testing`, default 1 MiB (it enters CHK caps).
    pub max_segment_size: u64,
    /// `peers.preferred`: server ids to put first in every permuted list.
    pub peers_preferred: Vec<String>,
    pub force_foolscap: bool,
}

impl std::fmt::Debug for ClientSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSection")
            .field(
                "introducer_furl",
                &self.introducer_furl.as_ref().map(|_| "<secret>"),
            )
            .field(
                "helper_furl",
                &self.helper_furl.as_ref().map(|_| "<secret>"),
            )
            .field("shares_needed", &self.shares_needed)
            .field("shares_happy", &self.shares_happy)
            .field("shares_total", &self.shares_total)
            .field("mutable_format", &self.mutable_format)
            .field("max_segment_size", &self.max_segment_size)
            .field("peers_preferred", &self.peers_preferred)
            .field("force_foolscap", &self.force_foolscap)
            .finish()
    }
}

/// How leases expire (`[storage]expire.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireMode {
    /// Leases expire at their own expiry time, or `override_lease_duration` seconds after renewal.
    Age {
        override_lease_duration: Option<i64>,
    },
    /// Leases renewed before this UTC second since the epoch expire.
    CutoffDate { cutoff: i64 },
}

/// `[storage]expire.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpireConfig {
    pub enabled: bool,
    pub mode: ExpireMode,
    pub immutable: bool,
    pub mutable: bool,
}

/// `[storage]`, interpreted only when storage is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSection {
    pub readonly: bool,
    pub reserved_space: u64,
    pub storage_dir: Option<String>,
    pub expire: ExpireConfig,
    pub force_foolscap: bool,
}

/// A whole `tahoe.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Everything in the file, including keys not modelled here.
    pub ini: Ini,
    pub node: NodeSection,
    pub client: ClientSection,
    pub storage_enabled: bool,
    /// `Some` iff `storage_enabled`.
    pub storage: Option<StorageSection>,
}

/// Tahoe's `DEFAULT_IMMUTABLE_MAX_SEGMENT_SIZE`.
pub const DEFAULT_MAX_SEGMENT_SIZE: u64 = 1024 * 1024;

const NODE_KEYS: &[&str] = &[
    "log_gatherer.furl",
    "nickname",
    "reveal-ip-address",
    "tempdir",
    "timeout.disconnect",
    "timeout.keepalive",
    "tub.location",
    "tub.port",
    "web.port",
    "web.static",
];
const STATIC_SECTIONS: &[(&str, &[&str])] = &[
    ("connections", &["tcp"]),
    ("node", NODE_KEYS),
    (
        "i2p",
        &[
            "enabled",
            "i2p.configdir",
            "i2p.executable",
            "launch",
            "sam.port",
            "dest",
            "dest.port",
            "dest.private_key_file",
        ],
    ),
    (
        "tor",
        &[
            "control.port",
            "enabled",
            "launch",
            "socks.port",
            "tor.executable",
            "onion",
            "onion.local_port",
            "onion.external_port",
            "onion.private_key_file",
        ],
    ),
    (
        "client",
        &[
            "helper.furl",
            "introducer.furl",
            "key_generator.furl",
            "mutable.format",
            "peers.preferred",
            "shares.happy",
            "shares.needed",
            "shares.total",
            "shares._max_immutable_segment_size_for_testing",
            "storage.plugins",
            "force_foolscap",
        ],
    ),
    (
        "storage",
        &[
            "debug_discard",
            "enabled",
            "anonymous",
            "expire.cutoff_date",
            "expire.enabled",
            "expire.immutable",
            "expire.mode",
            "expire.mutable",
            "expire.override_lease_duration",
            "readonly",
            "reserved_space",
            "storage_dir",
            "plugins",
            "grid_management",
            "force_foolscap",
        ],
    ),
    (
        "sftpd",
        &[
            "accounts.file",
            "enabled",
            "host_privkey_file",
            "host_pubkey_file",
            "port",
        ],
    ),
    ("helper", &["enabled"]),
];

/// Sections whose every option is valid (`client._is_valid_section`).
fn is_dynamic_section(name: &str) -> bool {
    name.starts_with("storageserver.plugins.")
        || name.starts_with("storageclient.plugins.")
        || name == "grid_managers"
        || name == "grid_manager_certificates"
}

/// Tahoe's `validate_config` with the client node's valid configuration: every section and
/// option must be known (options of `[DEFAULT]` count as options of every section).
pub fn validate_sections(ini: &Ini) -> Result<(), CfgError> {
    for section in ini.sections() {
        let statics = STATIC_SECTIONS
            .iter()
            .find(|(n, _)| *n == section)
            .map(|(_, k)| *k);
        if statics.is_none() && !is_dynamic_section(section) {
            return Err(CfgError::UnknownSection(section.to_string()));
        }
        for option in ini.options(section) {
            let known = statics.is_some_and(|k| k.contains(&option)) || is_dynamic_section(section);
            if !known {
                return Err(CfgError::UnknownOption {
                    section: section.to_string(),
                    option: option.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Python's `int(s)` for a `str`: optional surrounding whitespace, an optional sign, ASCII digits
/// with single `_` between digits. (Python also accepts non-ASCII decimal digits; lafs does not.)
pub fn parse_py_int(s: &str) -> Option<i64> {
    let s = py_strip(s);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut v: i64 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(10)?;
        v = v.checked_mul(10)?.checked_add(i64::from(d))?;
    }
    Some(if neg { -v } else { v })
}

/// `parse_abbreviated_size` refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unparseable size")]
pub struct SizeError;

/// Tahoe's `parse_abbreviated_size`: `None` for an empty string, else
/// `^(\d+)([KMGTPE]?I?B?)$` on the uppercased text; `K`=1000, `KI`=1024, a bare `I` or `B` is 1.
pub fn parse_abbreviated_size(s: &str) -> Result<Option<u64>, SizeError> {
    if s.is_empty() {
        return Ok(None);
    }
    let up = s.to_uppercase();
    let digits_end = up.find(|c: char| !c.is_ascii_digit()).unwrap_or(up.len());
    if digits_end == 0 {
        return Err(SizeError);
    }
    let (num, mut suffix) = up.split_at(digits_end);
    // The regex `$` also matches before one final "\n".
    suffix = suffix.strip_suffix('\n').unwrap_or(suffix);
    let suffix = suffix.strip_suffix('B').unwrap_or(suffix);
    let (letter, binary) = match suffix.strip_suffix('I') {
        Some(l) => (l, true),
        None => (suffix, false),
    };
    let power = match letter {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        "E" => 6,
        _ => return Err(SizeError),
    };
    let base: u64 = if binary { 1024 } else { 1000 };
    let multiplier = if letter.is_empty() {
        1
    } else {
        base.pow(power)
    };
    let n: u64 = num.parse().map_err(|_| SizeError)?;
    n.checked_mul(multiplier).map(Some).ok_or(SizeError)
}

/// Tahoe's `parse_duration`: one trailing `s` dropped, then a `day`, `month`, `mo` or `year`
/// unit (31-day months, 365-day years), the rest read by `int()`. Returns seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    const DAY: i64 = 24 * 60 * 60;
    let s = s.strip_suffix('s').unwrap_or(s);
    let (rest, unit) = if let Some(r) = s.strip_suffix("day") {
        (r, DAY)
    } else if let Some(r) = s.strip_suffix("month") {
        (r, 31 * DAY)
    } else if let Some(r) = s.strip_suffix("mo") {
        (r, 31 * DAY)
    } else if let Some(r) = s.strip_suffix("year") {
        (r, 365 * DAY)
    } else {
        return None;
    };
    parse_py_int(rest)?.checked_mul(unit)
}

/// Tahoe's `parse_date`: `YYYY-MM-DD` at the start of the text (anything after is accepted only
/// if it still matches the ISO timestamp pattern with `T00:00:00` appended), giving the UTC
/// midnight starting that day. Like `calendar.timegm`, the day is not range-checked (Feb 31 is
/// Mar 3) but the year (1..=9999) and month (1..=12) are.
pub fn parse_date(s: &str) -> Option<i64> {
    let full = format!("{s}T00:00:00");
    let b = full.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().all(u8::is_ascii_digit).then_some(())?;
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0..4)?;
    (b.get(4) == Some(&b'-')).then_some(())?;
    let month = num(5..7)?;
    (b.get(7) == Some(&b'-')).then_some(())?;
    let day = num(8..10)?;
    matches!(b.get(10), Some(b'T' | b'_' | b' ')).then_some(())?;
    let hour = num(11..13)?;
    (b.get(13) == Some(&b':')).then_some(())?;
    let minute = num(14..16)?;
    (b.get(16) == Some(&b':')).then_some(())?;
    let second = num(17..19)?;
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    let days = days_from_civil(year, month, 1) + day - 1;
    Some(days * 86400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

struct Reader<'a> {
    ini: &'a Ini,
}

impl Reader<'_> {
    /// `_Config.get_config` without a boolean: the interpolated string, with the `.furl` check.
    fn string(&self, section: &str, option: &str) -> Result<Option<String>, CfgError> {
        let v = self.ini.get(section, option)?;
        if option.ends_with(".furl") && v.as_deref().is_some_and(|v| v.contains('#')) {
            return Err(CfgError::UnescapedHash {
                section: section.into(),
                option: option.into(),
            });
        }
        Ok(v)
    }

    fn boolean(&self, section: &str, option: &str, default: bool) -> Result<bool, CfgError> {
        Ok(self.ini.get_bool(section, option)?.unwrap_or(default))
    }

    fn int(&self, section: &str, option: &str, default: i64) -> Result<i64, CfgError> {
        match self.string(section, option)? {
            None => Ok(default),
            Some(v) => parse_py_int(&v).ok_or_else(|| CfgError::NotInteger {
                section: section.into(),
                option: option.into(),
            }),
        }
    }
}

impl NodeConfig {
    /// Parses and validates a `tahoe.cfg` like Tahoe: unknown sections or options are errors.
    pub fn parse(text: &str) -> Result<NodeConfig, CfgError> {
        let ini = Ini::parse(text)?;
        validate_sections(&ini)?;
        Self::from_ini(ini)
    }

    /// [`NodeConfig::parse`] over file bytes (UTF-8 with an optional BOM).
    pub fn parse_bytes(data: &[u8]) -> Result<NodeConfig, CfgError> {
        let ini = Ini::parse_bytes(data)?;
        validate_sections(&ini)?;
        Self::from_ini(ini)
    }

    /// Interprets an already parsed file without rejecting unknown keys.
    pub fn from_ini(ini: Ini) -> Result<NodeConfig, CfgError> {
        let r = Reader { ini: &ini };
        let node = NodeSection {
            nickname: r
                .string("node", "nickname")?
                .unwrap_or_else(|| "<unspecified>".to_string()),
            tub_port: r.string("node", "tub.port")?,
            tub_location: r.string("node", "tub.location")?,
            web_port: r.string("node", "web.port")?,
        };
        let k = r.int("client", "shares.needed", 3)?;
        let n = r.int("client", "shares.total", 10)?;
        let happy = r.int("client", "shares.happy", 7)?;
        if !(1 <= k && k <= n && n <= 256 && (0..=n).contains(&happy)) {
            return Err(CfgError::BadEncoding { k, happy, n });
        }
        let max_seg = r.int(
            "client",
            "shares._max_immutable_segment_size_for_testing",
            DEFAULT_MAX_SEGMENT_SIZE as i64,
        )?;
        let max_segment_size = u64::try_from(max_seg)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| CfgError::NotInteger {
                section: "client".into(),
                option: "shares._max_immutable_segment_size_for_testing".into(),
            })?;
        let mutable_format = match r.string("client", "mutable.format")? {
            Some(v) if v.to_uppercase() == "MDMF" => MutableFormat::Mdmf,
            _ => MutableFormat::Sdmf,
        };
        let helper_furl = r
            .string("client", "helper.furl")?
            .filter(|v| !v.is_empty() && v != "None");
        let peers_preferred = r
            .string("client", "peers.preferred")?
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| py_strip(p).to_string())
            .collect();
        let client = ClientSection {
            introducer_furl: r.string("client", "introducer.furl")?,
            helper_furl,
            shares_needed: k as u16,
            shares_happy: happy as u16,
            shares_total: n as u16,
            mutable_format,
            max_segment_size,
            peers_preferred,
            force_foolscap: r.boolean("client", "force_foolscap", false)?,
        };
        let storage_enabled = r.boolean("storage", "enabled", true)?;
        let storage = if storage_enabled {
            Some(Self::storage(&r)?)
        } else {
            None
        };
        Ok(NodeConfig {
            node,
            client,
            storage_enabled,
            storage,
            ini,
        })
    }

    fn storage(r: &Reader<'_>) -> Result<StorageSection, CfgError> {
        let err = |option: &str| (String::from("storage"), option.to_string());
        let readonly = r.boolean("storage", "readonly", false)?;
        let reserved_space = match r.string("storage", "reserved_space")? {
            None => 0,
            Some(v) => parse_abbreviated_size(&v)
                .map_err(|_| {
                    let (section, option) = err("reserved_space");
                    CfgError::BadSize { section, option }
                })?
                .unwrap_or(0),
        };
        let enabled = r.boolean("storage", "expire.enabled", false)?;
        let mode = match r.string("storage", "expire.mode")? {
            Some(m) => m,
            None if enabled => {
                let (section, option) = err("expire.mode");
                return Err(CfgError::Missing { section, option });
            }
            None => "age".to_string(),
        };
        let o_l_d = match r.string("storage", "expire.override_lease_duration")? {
            None => None,
            Some(v) => Some(parse_duration(&v).ok_or_else(|| {
                let (section, option) = err("expire.override_lease_duration");
                CfgError::BadDuration { section, option }
            })?),
        };
        let mode = match mode.as_str() {
            "age" => ExpireMode::Age {
                override_lease_duration: o_l_d,
            },
            "cutoff-date" => {
                let Some(v) = r.string("storage", "expire.cutoff_date")? else {
                    let (section, option) = err("expire.cutoff_date");
                    return Err(CfgError::Missing { section, option });
                };
                let cutoff = parse_date(&v).ok_or_else(|| {
                    let (section, option) = err("expire.cutoff_date");
                    CfgError::BadDate { section, option }
                })?;
                ExpireMode::CutoffDate { cutoff }
            }
            _ => return Err(CfgError::BadExpireMode),
        };
        Ok(StorageSection {
            readonly,
            reserved_space,
            storage_dir: r.string("storage", "storage_dir")?,
            expire: ExpireConfig {
                enabled,
                mode,
                immutable: r.boolean("storage", "expire.immutable", true)?,
                mutable: r.boolean("storage", "expire.mutable", true)?,
            },
            force_foolscap: r.boolean("storage", "force_foolscap", false)?,
        })
    }
}
