//! `tartape completions` and `tartape man`: the command line describing itself.

use std::io::{self, Write};

use clap::{Args, CommandFactory, ValueEnum};

use tartape::{Error, Result};

use super::Cli;
use super::output::{Exit, stdout_error};

// What `tartape completions` was asked to do.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell.
    shell: ShellArg,
}

/// Shells `tartape completions` writes for.
#[derive(Clone, Copy, ValueEnum)]
enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

/// `tartape completions SHELL`: the script is what was asked for, so `-q` keeps it.
pub fn completions(args: CompletionsArgs) -> Result<Exit> {
    let shell = match args.shell {
        ShellArg::Bash => clap_complete::Shell::Bash,
        ShellArg::Zsh => clap_complete::Shell::Zsh,
        ShellArg::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tartape", &mut script);
    io::stdout().write_all(&script).map_err(stdout_error)?;
    Ok(Exit::Success)
}

/// `tartape man`: the page is what was asked for, so `-q` keeps it.
pub fn man() -> Result<Exit> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| Error::io("<man page>", e))?;
    io::stdout().write_all(&page).map_err(stdout_error)?;
    Ok(Exit::Success)
}
