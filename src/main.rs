//! The `lafs` binary: everything lives in `cli`; this only maps errors to an exit code.

mod cli;

/// Exit status of a command whose output pipe closed early: what the shell reports for a
/// process killed by SIGPIPE (128 + 13). Rust ignores SIGPIPE (the servers and the mount
/// daemon must survive a peer that hangs up), so `lafs ls | head` sees EPIPE as an error
/// instead; it ends the command quietly, as SIGPIPE would.
const BROKEN_PIPE_STATUS: u8 = 141;

fn main() -> std::process::ExitCode {
    match cli::run(std::env::args_os().collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::from(BROKEN_PIPE_STATUS),
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
