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
        let cap = if loc.path.is_empty() {
            loc.root.clone()
        } else {
            grid.dirs
                .resolve(&loc.root, &loc.path_text())
                .await
                .with_context(|| format!("cannot find '{}'", loc.path_text()))?
        };
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
                out.write_all(format_deep(&d, a.repair).as_bytes())?;
            }
            if d.unrecoverable() > 0 {
                anyhow::bail!("{} object(s) are unrecoverable", d.unrecoverable());
            }
        } else {
            let r = check_node(&grid.dirs, &secrets, &cap, &opts)
                .await
                .context("check failed")?;
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

/// The lines tahoe prints for one check result.
pub fn format_results(r: &CheckResults) -> String {
    let mut s = format!("Summary: {}\n", r.summary());
    if r.storage_index.is_none() {
        // LIT: no shares, nothing more to say.
        return s;
    }
    s += &format!(" storage index: {}\n", si_text(r));
    s += &format!(
        " good-shares: {} (encoding is {}-of-{})\n",
        r.distinct_shares, r.needed, r.total
    );
    s += &format!(" wrong-shares: {}\n", r.good_shares - r.distinct_shares);
    if r.versions > 1 {
        s += &format!(
            " versions: {} ({} recoverable)\n",
            r.versions, r.recoverable_versions
        );
    }
    if !r.corrupt.is_empty() {
        s += " corrupt shares:\n";
        for c in &r.corrupt {
            s += &format!(
                "  server {}, SI {}, shnum {}\n",
                c.server_id,
                si_text(r),
                c.shnum
            );
        }
    }
    s
}

/// `check` output, with the repair lines when `--repair` was given.
pub fn format_check(r: &CheckAndRepairResults, repair: bool) -> String {
    if !repair {
        return format_results(&r.pre);
    }
    let mut s = String::new();
    if r.pre.healthy {
        s += &format_results(&r.pre);
        s += " repair not attempted: the node is healthy\n";
    } else if !r.repair_attempted {
        s += &format_results(&r.pre);
        s += " repair not attempted: the node is unrecoverable\n";
    } else {
        s += &format_results(&r.pre);
        s += if r.repair_successful {
            " repair successful\n"
        } else {
            " repair failed\n"
        };
        if let Some(post) = &r.post {
            s += " post-repair:\n";
            s += &format_results(post);
        }
    }
    s
}

/// `deep-check` totals, as tahoe prints them.
pub fn format_deep(d: &DeepCheckResults, repair: bool) -> String {
    let n = d.objects_checked();
    let mut s = String::new();
    for e in &d.entries {
        let label = if e.path.is_empty() { "<root>" } else { &e.path };
        match &e.results {
            Ok(r) if !r.current().healthy => {
                s += &format!("'{label}': {}\n", r.current().summary())
            }
            Ok(_) => {}
            Err(err) => s += &format!("'{label}': check failed: {err}\n"),
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
    if d.corrupt_shares() > 0 {
        s += &format!(" {} corrupt shares\n", d.corrupt_shares());
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
        "summary": r.summary(),
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
