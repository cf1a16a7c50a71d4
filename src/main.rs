//! The `lafs` binary: everything lives in [`lafs::cli`]; this only maps errors to an exit code.

fn main() -> std::process::ExitCode {
    match lafs::cli::run(std::env::args_os().collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lafs: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
