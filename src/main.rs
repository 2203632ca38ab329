//! The `tartape` command line: parses, dispatches to the command's module in `cli/`, and
//! turns the result into an exit status. A thin shell over the library.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::output::{self, Exit};
use cli::{Cli, Command};

fn main() -> ExitCode {
    // SAFETY: this runs first, on the only thread: no other thread can use SQLite while
    // it is configured, and setting a signal's disposition to its default is sound.
    unsafe {
        // Like cat and tar: a closed pipe ends the process quietly.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        tartape::catalog::configure_sqlite();
    }
    raise_open_file_limit();
    let cli = match Cli::try_parse().or_else(cli::helper_form) {
        Ok(cli) => cli,
        Err(e) => return output::usage_error(e),
    };
    output::init(cli.verbose, cli.quiet);
    let verifying = matches!(cli.command, Command::Verify(_));
    output::finish(run(cli.command), verifying)
}

fn run(command: Command) -> tartape::Result<Exit> {
    match command {
        Command::Record(args) => cli::record::run(args),
        Command::Stream(args) => cli::stream::run(args),
        Command::Verify(args) => cli::inspect::verify(args),
        Command::Info(args) => cli::inspect::info(args),
        Command::Ls(args) => cli::inspect::ls(args),
        Command::Locate(args) => cli::inspect::locate(args),
        Command::Volumes(args) => cli::inspect::volumes(args),
        Command::Restore(args) => cli::restore::run(args),
        Command::Upload(args) => cli::upload::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Mount(args) => cli::mount::run(args),
        Command::Umount(args) => cli::mount::umount(args),
        Command::Mounts(args) => cli::mount::mounts(args),
        Command::Completions(args) => cli::shell::completions(args),
        Command::Man => cli::shell::man(),
    }
}

/// A walk holds one directory descriptor per level of depth: lift the soft limit on open
/// files to the hard one, as many tools that walk trees do. Best effort.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
