//! The `lafs` binary: everything lives in `cli`; this only maps errors to an exit code.

mod cli;

fn main() -> std::process::ExitCode {
    match cli::run(std::env::args_os().collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lafs: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
