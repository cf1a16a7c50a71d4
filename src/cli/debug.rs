//! `lafs debug …`: developer tools.
//!
//! `lafs debug encode` computes the CHK (or LIT) cap Tahoe 1.20 would give a file, without
//! uploading anything: the shares are encoded and discarded.

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
    }
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
