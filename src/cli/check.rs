//! The `check` and `deep-check` verbs: the health of one node, or of every node of a tree, as
//! tahoe's `tahoe check` / `tahoe deep-check` print it (`Summary: Healthy` lines, share counts,
//! `done: N objects checked` totals), with `--verify` (read and validate every share) and
//! `--repair` (restore missing shares of unhealthy, recoverable nodes). `--raw` prints JSON.
//!
//! The work is done by `lafs::client::check`; this module only resolves paths and formats.
//! Caps never appear in the output: nodes are named by path and storage index.

use super::grid::{default_node_dir, Grid};
use super::paths::parse_location;
use anyhow::Context;
use clap::Args;
use lafs::client::check::{
    check_node, deep_check, CheckAndRepairResults, CheckOptions, CheckResults, DeepCheckResults,
};
use lafs::client::secrets::ClientSecrets;
use lafs::util::base32;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read and validate every share (slow).
    #[arg(long)]
    pub verify: bool,
    /// Repair the node if it is unhealthy but recoverable.
    #[arg(long)]
    pub repair: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub raw: bool,
    /// deep-check: one line per node.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// The file or directory (default `tahoe:`).
    pub source: Option<String>,
}

/// Runs `check` (`deep == false`) or `deep-check`.
pub fn run(node_dir: Option<PathBuf>, a: CheckArgs, deep: bool) -> anyhow::Result<()> {
    let basedir = node_dir.unwrap_or_else(default_node_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let grid = Grid::open(&basedir)?;
        let loc = parse_location(&grid.node.aliases, a.source.as_deref().unwrap_or("tahoe:"))?;
        let cap = super::files::resolve(&grid, &loc).await?;
        let secrets = ClientSecrets::from_lease_secret(&grid.lease_secret);
        let opts = CheckOptions {
            verify: a.verify,
            repair: a.repair,
            happy: usize::from(grid.happy),
        };
        let mut out = std::io::stdout().lock();
        if deep {
            if !cap.is_directory() {
                anyhow::bail!("deep-check needs a directory");
            }
            let d = deep_check(&grid.dirs, &secrets, &cap, &opts).await;
            if a.raw {
                writeln!(out, "{}", serde_json::to_string_pretty(&deep_json(&d))?)?;
            } else {
                out.write_all(format_deep(&d, a.repair, a.verbose).as_bytes())?;
            }
            if d.unrecoverable() > 0 {
                anyhow::bail!("{} object(s) are unrecoverable", d.unrecoverable());
            }
        } else {
            let r = check_node(&grid.dirs, &secrets, &cap, &opts)
                .await
                .context("check failed")?;
            if let Some(e) = &r.repair_error {
                eprintln!("lafs: repair failed: {e}");
            }
            if a.raw {
                writeln!(out, "{}", serde_json::to_string_pretty(&repair_json(&r))?)?;
            } else {
                out.write_all(format_check(&r, a.repair).as_bytes())?;
            }
        }
        Ok(())
    })
}

fn si_text(r: &CheckResults) -> String {
    r.storage_index
        .map(|si| base32::encode(&si))
        .unwrap_or_default()
}

fn corrupt_line(r: &CheckResults, c: &lafs::client::check::CorruptShare) -> String {
    format!(
        "server {}, SI {}, shnum {}",
        c.server_id,
        si_text(r),
        c.shnum
    )
}

/// The lines tahoe prints for one check result (`summary` is the first line's text).
fn format_counts(r: &CheckResults, summary: &str) -> String {
    let mut s = format!("Summary: {summary}\n");
    s += &format!(" storage index: {}\n", si_text(r));
    if r.storage_index.is_some() {
        s += &format!(
            " good-shares: {} (encoding is {}-of-{})\n",
            r.distinct_shares, r.needed, r.total
        );
        s += &format!(" wrong-shares: {}\n", r.good_shares - r.distinct_shares);
    }
    if !r.corrupt.is_empty() {
        s += " corrupt shares:\n";
        for c in &r.corrupt {
            s += &format!("  {}\n", corrupt_line(r, c));
        }
    }
    s
}

/// Tahoe's summary text; LIT files have none and print `Healthy (LIT)`.
fn summary_of(r: &CheckResults) -> String {
    if r.storage_index.is_none() {
        "Healthy (LIT)".into()
    } else {
        r.summary()
    }
}

/// `check` output as `tahoe check` prints it (with `--repair`: the pre-repair counts and
/// whether the repair succeeded).
pub fn format_check(r: &CheckAndRepairResults, repair: bool) -> String {
    if !repair {
        return format_counts(&r.pre, &summary_of(&r.pre));
    }
    let summary = if r.pre.healthy {
        "healthy"
    } else {
        "not healthy"
    };
    let mut s = format_counts(&r.pre, summary);
    if r.repair_attempted {
        s += if r.repair_successful {
            " repair successful\n"
        } else {
            " repair failed\n"
        };
    }
    s
}

/// `deep-check` output as `tahoe deep-check` prints it: with `verbose` one line per node, always
/// the corrupt shares (and with `--repair` the repair outcomes), then the totals.
pub fn format_deep(d: &DeepCheckResults, repair: bool, verbose: bool) -> String {
    let n = d.objects_checked();
    let mut s = String::new();
    for (i, e) in d.entries.iter().enumerate() {
        if (i + 1) % 100 == 0 {
            s += &format!("{} objects checked..\n", i + 1);
        }
        let label = if e.path.is_empty() {
            "<root>".to_string()
        } else {
            format!("'{}'", e.path)
        };
        match &e.results {
            Ok(r) => {
                if verbose {
                    let summary = match (repair, r.pre.healthy) {
                        (false, _) => summary_of(&r.pre),
                        (true, true) => "healthy".into(),
                        (true, false) => "not healthy".into(),
                    };
                    s += &format!("{label}: {summary}\n");
                }
                for c in &r.pre.corrupt {
                    s += &format!(" corrupt: {}\n", corrupt_line(&r.pre, c));
                }
                if repair && r.repair_attempted {
                    s += if r.repair_successful {
                        " repair successful\n"
                    } else {
                        " repair failed\n"
                    };
                }
            }
            Err(err) => s += &format!("{label}: check failed: {err}\n"),
        }
    }
    for (p, err) in &d.list_errors {
        s += &format!("'{p}': could not be listed: {err}\n");
    }
    if repair {
        let (pre, post) = (d.healthy_pre(), d.healthy_post());
        let (att, ok) = (d.repairs_attempted(), d.repairs_successful());
        s += &format!("done: {n} objects checked\n");
        s += &format!(" pre-repair: {pre} healthy, {} unhealthy\n", n - pre);
        s += &format!(
            " {att} repairs attempted, {ok} successful, {} failed\n",
            att - ok
        );
        s += &format!(" post-repair: {post} healthy, {} unhealthy\n", n - post);
    } else {
        let h = d.healthy_pre();
        s += &format!(
            "done: {n} objects checked, {h} healthy, {} unhealthy\n",
            n - h
        );
    }
    s
}

fn results_json(r: &CheckResults) -> Value {
    let sharemap: serde_json::Map<String, Value> = r
        .sharemap
        .iter()
        .map(|(sh, servers)| (sh.to_string(), json!(servers)))
        .collect();
    json!({
        "storage-index": si_text(r),
        "summary": summary_of(r),
        "results": {
            "healthy": r.healthy,
            "recoverable": r.recoverable,
            "needs-rebalancing": r.needs_rebalancing,
            "count-happiness": r.happiness,
            "count-shares-needed": r.needed,
            "count-shares-expected": r.total,
            "count-shares-good": r.distinct_shares,
            "count-good-share-hosts": r.good_hosts,
            "count-wrong-shares": r.good_shares - r.distinct_shares,
            "count-corrupt-shares": r.corrupt.len(),
            "list-corrupt-shares": r.corrupt.iter()
                .map(|c| json!([c.server_id, si_text(r), c.shnum])).collect::<Vec<_>>(),
            "count-recoverable-versions": r.recoverable_versions,
            "count-unrecoverable-versions": r.versions.saturating_sub(r.recoverable_versions),
            "servers-responding": r.servers_queried - r.servers_failed.len(),
            "sharemap": sharemap,
        }
    })
}

fn repair_json(r: &CheckAndRepairResults) -> Value {
    if r.post.is_none() && !r.repair_attempted {
        return results_json(&r.pre);
    }
    json!({
        "storage-index": si_text(&r.pre),
        "repair-attempted": r.repair_attempted,
        "repair-successful": r.repair_successful,
        "pre-repair-results": results_json(&r.pre),
        "post-repair-results": r.post.as_ref().map(results_json),
    })
}

fn deep_json(d: &DeepCheckResults) -> Value {
    let n = d.objects_checked();
    json!({
        "count-objects-checked": n,
        "count-objects-healthy-pre-repair": d.healthy_pre(),
        "count-objects-unhealthy-pre-repair": n - d.healthy_pre(),
        "count-objects-healthy-post-repair": d.healthy_post(),
        "count-objects-unhealthy-post-repair": n - d.healthy_post(),
        "count-objects-unrecoverable": d.unrecoverable(),
        "count-repairs-attempted": d.repairs_attempted(),
        "count-repairs-successful": d.repairs_successful(),
        "count-corrupt-shares": d.corrupt_shares(),
        "list-unhealthy-files": d.entries.iter()
            .filter(|e| e.results.as_ref().map_or(true, |r| !r.current().healthy))
            .map(|e| json!([e.path.split('/').filter(|p| !p.is_empty()).collect::<Vec<_>>()]))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    //! Expected text follows the format strings of tahoe's `scripts/tahoe_check.py`.
    use super::*;
    use lafs::client::check::{CorruptShare, DeepCheckEntry};

    fn unhealthy() -> CheckResults {
        CheckResults {
            storage_index: Some([0; 16]),
            needed: 3,
            total: 10,
            good_shares: 9,
            distinct_shares: 8,
            recoverable: true,
            corrupt: vec![CorruptShare {
                server_id: "v0-abc".into(),
                shnum: 4,
                reason: "x".into(),
            }],
            ..CheckResults::default()
        }
    }

    #[test]
    fn check_lines() {
        let r = CheckAndRepairResults {
            pre: unhealthy(),
            ..CheckAndRepairResults::default()
        };
        let si = "a".repeat(26);
        assert_eq!(
            format_check(&r, false),
            format!(
                "Summary: Not Healthy: 8 shares (enc 3-of-10)\n storage index: {si}\n \
                 good-shares: 8 (encoding is 3-of-10)\n wrong-shares: 1\n corrupt shares:\n  \
                 server v0-abc, SI {si}, shnum 4\n"
            )
        );
        let r = CheckAndRepairResults {
            pre: unhealthy(),
            repair_attempted: true,
            repair_successful: true,
            ..CheckAndRepairResults::default()
        };
        let text = format_check(&r, true);
        assert!(text.starts_with("Summary: not healthy\n"), "{text}");
        assert!(text.ends_with(" repair successful\n"), "{text}");
    }

    #[test]
    fn deep_check_totals() {
        let healthy = CheckResults {
            healthy: true,
            recoverable: true,
            ..CheckResults::default()
        };
        let entry = |path: &str, pre: CheckResults| DeepCheckEntry {
            path: path.into(),
            is_directory: false,
            results: Ok(CheckAndRepairResults {
                pre,
                ..CheckAndRepairResults::default()
            }),
        };
        let d = DeepCheckResults {
            entries: vec![entry("", healthy.clone()), entry("a", unhealthy())],
            list_errors: Vec::new(),
        };
        let text = format_deep(&d, false, true);
        assert!(
            text.starts_with("<root>: Healthy (LIT)\n'a': Not Healthy"),
            "{text}"
        );
        assert!(text.contains(" corrupt: server v0-abc, SI "), "{text}");
        assert!(
            text.ends_with("done: 2 objects checked, 1 healthy, 1 unhealthy\n"),
            "{text}"
        );
        let text = format_deep(&d, true, false);
        assert!(text.ends_with(
            "done: 2 objects checked\n pre-repair: 1 healthy, 1 unhealthy\n 0 repairs attempted, \
             0 successful, 0 failed\n post-repair: 1 healthy, 1 unhealthy\n"
        ));
    }
}
