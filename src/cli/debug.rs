//! `lafs debug …`: developer tools.
//!
//! `lafs debug encode` computes the CHK (or LIT) cap Tahoe 1.20 would give a file, without
//! uploading anything: the shares are encoded and discarded.
//!
//! `lafs debug man OUTDIR` (hidden) writes the man pages of `lafs` and of each of its
//! subcommands, generated from the clap definitions, so they say what `--help` says. The pages
//! are committed in `man/`; a unit test fails when they differ from freshly generated ones.

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Args, Subcommand};
use lafs::immutable::{encode_file, EncodingParams, KeySource, PlaintextSource, ShareSink};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Print the immutable cap of FILE (convergent encryption), without uploading.
    Encode(EncodeArgs),
    /// Write the man pages of lafs and its subcommands (lafs.1, lafs-put.1, ...) into OUTDIR.
    #[command(hide = true)]
    Man {
        /// Where to write them (created if missing).
        outdir: PathBuf,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("secret").required(true).args(["convergence", "convergence_base64"])))]
pub struct EncodeArgs {
    /// Convergence secret as in a node's private/convergence file (base32).
    #[arg(long, value_name = "SECRET")]
    convergence: Option<String>,
    /// Convergence secret as padded standard base64 (the test vectors' form).
    #[arg(long, value_name = "B64")]
    convergence_base64: Option<String>,
    /// Shares needed to recover the file (k).
    #[arg(long, default_value_t = 3)]
    needed: usize,
    /// Shares produced (N).
    #[arg(long, default_value_t = 10)]
    total: usize,
    /// Maximum segment size in bytes (it enters the convergent key).
    #[arg(long, default_value_t = lafs::immutable::params::DEFAULT_MAX_SEGMENT_SIZE)]
    max_segment_size: u64,
    /// The file to encode.
    file: PathBuf,
}

impl std::fmt::Debug for EncodeArgs {
    /// Omits the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeArgs")
            .field("needed", &self.needed)
            .field("total", &self.total)
            .field("max_segment_size", &self.max_segment_size)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Encode(args) => {
            let cap = encode(&args)?;
            use std::io::Write as _;
            writeln!(std::io::stdout().lock(), "{cap}")?;
            Ok(())
        }
        DebugCommand::Man { outdir } => {
            std::fs::create_dir_all(&outdir)
                .with_context(|| format!("creating {}", outdir.display()))?;
            for (name, page) in man_pages()? {
                let path = outdir.join(&name);
                std::fs::write(&path, page)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}

/// The man pages of `lafs` and of every visible subcommand, recursively, as (file name, roff
/// text), in a fixed order: what `clap_mangen::generate_to` writes, rendered in memory, with
/// the title line of [`title_line`]. No date goes into a page, so the output depends on the
/// clap definitions and the version only.
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut page = Vec::new();
        man.render(&mut page)?;
        let page = String::from_utf8_lossy(&page);
        let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
        let text: String = page
            .lines()
            .map(|l| {
                if l.starts_with(".TH ") {
                    title_line(name)
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect();
        out.push((man.get_filename(), text.into_bytes()));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out)?;
        }
        Ok(())
    }
    use clap::CommandFactory as _;
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand its display name (`lafs-put`), the page's name.
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &mut out).context("rendering the man pages")?;
    Ok(out)
}

/// The `.TH` line of the page of command `name` (`lafs-put`): its title in capitals, section 1,
/// no date, and `lafs VERSION` as the source for every page. clap_mangen's own line writes an
/// empty date as nothing, so man(7) reads the next field (the source) as the date, and gives a
/// subcommand's page the subcommand's name as its source.
fn title_line(name: &str) -> String {
    format!(
        ".TH {} 1 \"\" \"lafs {}\"",
        name.to_uppercase().replace('-', "\\-"),
        env!("CARGO_PKG_VERSION")
    )
}

/// Decodes the convergence secret from the argument given.
fn secret(args: &EncodeArgs) -> anyhow::Result<Vec<u8>> {
    match (&args.convergence, &args.convergence_base64) {
        (Some(b32), None) => lafs::util::base32::decode(b32.trim())
            .context("--convergence is not valid Tahoe base32 (lowercase, canonical)"),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .context("--convergence-base64 is not valid padded base64"),
        _ => bail!("give exactly one of --convergence and --convergence-base64"),
    }
}

struct FileSource {
    file: std::fs::File,
    size: u64,
}

impl PlaintextSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), lafs::immutable::BoxError> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(buf)?;
        Ok(())
    }
}

/// Discards shares: only the cap is wanted.
struct NullSink;

impl ShareSink for NullSink {
    fn write(&mut self, _: usize, _: u64, _: &[u8]) -> Result<(), lafs::immutable::BoxError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), lafs::immutable::BoxError> {
        Ok(())
    }
}

fn encode(args: &EncodeArgs) -> anyhow::Result<String> {
    let secret = secret(args)?;
    let params = EncodingParams {
        needed: args.needed,
        happy: args.total,
        total: args.total,
        max_segment_size: args.max_segment_size,
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata()?.len();
    let mut source = FileSource { file, size };
    let cap = encode_file(
        &mut source,
        &mut NullSink,
        &params,
        &KeySource::Convergent(secret),
    )?;
    Ok(cap.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed pages in `man/` are exactly what the clap definitions generate: a changed
    /// help text, option or version without regenerated pages fails here, and so does a page
    /// left behind by a removed subcommand.
    #[test]
    fn committed_man_pages_match_the_clap_definitions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let fix = "regenerate them: cargo run --bin lafs -- debug man man/";
        let pages = man_pages().unwrap();
        let names: std::collections::BTreeSet<&str> =
            pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains("lafs.1") && names.contains("lafs-put.1"));
        assert!(names.contains("lafs-debug-encode.1"));
        assert!(!names
            .iter()
            .any(|n| n.contains("help") || n.contains("-man")));
        let put = &pages.iter().find(|(n, _)| n == "lafs-put.1").unwrap().1;
        let title = format!(
            ".TH LAFS\\-PUT 1 \"\" \"lafs {}\"\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(String::from_utf8_lossy(put).contains(&title));
        for (name, page) in &pages {
            let committed = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(committed == *page, "man/{name} is missing or stale; {fix}");
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let generated = name.starts_with("lafs") && name.ends_with(".1");
            assert!(
                !generated || names.contains(name.as_str()),
                "man/{name} is not generated any more: remove it; {fix}"
            );
        }
    }
}
