//! The `lafs` command line.
//!
//! `main` hands `argv` to [`run`], which picks the personality from `argv[0]` (so the same binary
//! can later answer as `mount.lafs`) and then parses the subcommands with clap. Commands write
//! their result to stdout; errors go back to `main`, which prints them to stderr and exits
//! non-zero. Secrets given on the command line never appear in error messages.

pub mod check;
pub mod ctl;
pub mod debug;
pub mod files;
pub mod grid;
pub mod mount;
pub mod node;
pub mod paths;
pub mod up;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser, Debug)]
#[command(name = "lafs", version, about = "Tahoe-LAFS compatible client")]
pub struct Cli {
    /// The node directory (default ~/.tahoe), for the file commands.
    #[arg(
        short = 'd',
        long = "node-directory",
        global = true,
        value_name = "DIR"
    )]
    pub node_directory: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Developer tools.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Storage node commands.
    #[command(flatten)]
    Node(node::NodeCommand),
    /// File and directory commands.
    #[command(flatten)]
    Files(files::FileCommand),
    /// A local grid (storage servers, a client, a root directory), mounted: the main job.
    Up(up::UpArgs),
    /// Mounts a directory with FUSE.
    #[command(after_help = mount::MOUNT_OPTIONS)]
    Mount(mount::MountArgs),
    /// Unmounts a lafs mount (--flush: once everything written is on the grid).
    Umount(ctl::UmountArgs),
    /// What a lafs mount has not uploaded yet, its cache and its last errors.
    Status(ctl::StatusArgs),
    /// Check the health of a file or directory (--verify reads every share, --repair fixes).
    Check(check::CheckArgs),
    /// Check every file and directory under a directory.
    DeepCheck(check::CheckArgs),
}

/// Which program the binary is acting as, from the file name it was invoked under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Personality {
    Lafs,
    /// `mount.lafs` (Linux) or `mount_lafs` (macOS and the BSDs name mount helpers so): the
    /// mount(8) helper.
    MountHelper,
}

pub fn personality(argv0: &std::ffi::OsStr) -> Personality {
    match std::path::Path::new(argv0).file_name() {
        Some(n) if n == "mount.lafs" || n == "mount_lafs" => Personality::MountHelper,
        _ => Personality::Lafs,
    }
}

/// Runs the program with these arguments (including `argv[0]`).
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let argv0 = args.first().cloned().unwrap_or_default();
    match personality(&argv0) {
        Personality::Lafs => {
            let cli = Cli::parse_from(args);
            match cli.command {
                Command::Debug(cmd) => debug::run(cmd),
                Command::Node(cmd) => node::run(cmd),
                Command::Files(cmd) => files::run(cli.node_directory, cmd),
                Command::Up(a) => up::run(a),
                Command::Mount(a) => mount::run(cli.node_directory, a),
                Command::Umount(a) => ctl::umount(a),
                Command::Status(a) => ctl::status(a),
                Command::Check(a) => check::run(cli.node_directory, a, false),
                Command::DeepCheck(a) => check::run(cli.node_directory, a, true),
            }
        }
        Personality::MountHelper => mount::mount_helper(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_helper_names_of_linux_and_macos_select_the_helper() {
        for name in [
            "mount.lafs",
            "/sbin/mount.lafs",
            "/usr/local/sbin/mount_lafs",
        ] {
            assert_eq!(
                personality(name.as_ref()),
                Personality::MountHelper,
                "{name}"
            );
        }
        for name in ["lafs", "/usr/bin/lafs", "mount.lafs.old", "mount-lafs", ""] {
            assert_eq!(personality(name.as_ref()), Personality::Lafs, "{name}");
        }
    }

    #[test]
    fn lafs_mount_help_lists_the_mount_options() {
        use clap::CommandFactory as _;
        let mut cli = Cli::command();
        let mount = cli
            .find_subcommand_mut("mount")
            .expect("a mount subcommand");
        let help = mount.render_long_help().to_string();
        for option in [
            "cache-size=BYTES",
            "write-back-delay=SECS",
            "allow_root",
            "noexec",
        ] {
            assert!(help.contains(option), "{option} missing from:\n{help}");
        }
    }
}
