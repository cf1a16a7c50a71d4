//! The `lafs` binary: everything lives in `cli`; this only maps errors to an exit code.

mod cli;

/// Exit status of a command whose output pipe closed early: what the shell reports for a
/// process killed by SIGPIPE (128 + 13). Rust ignores SIGPIPE (the servers and the mount
/// daemon must survive a peer that hangs up), so `lafs ls | head` sees EPIPE as an error
/// instead; it ends the command quietly, as SIGPIPE would.
const BROKEN_PIPE_STATUS: u8 = 141;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let helper = cli::personality(args.first().map_or("".as_ref(), |a| a.as_os_str()))
        == cli::Personality::MountHelper;
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::from(BROKEN_PIPE_STATUS),
        // As mount(8) helpers do: its name, and mount(8)'s exit statuses.
        Err(e) if helper => {
            eprintln!("mount.lafs: {e:#}");
            std::process::ExitCode::from(cli::mount::helper_exit_status(&e))
        }
        Err(e) => {
            eprintln!("lafs: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
