//! Everything the command line shows: the logger, `-q`, progress bars, what a command
//! prints on success (text or JSON, through [`Out`]), the one-line error and the exit
//! status (SPEC §6). Commands print nothing by any other way.

use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use tartape::{Error, Result};

/// `-q`: nothing on success.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Whether a warning or an error was logged: a background mount that ends cleanly without
/// one removes its log.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Sets up logging (`-v`, `-vv`, `RUST_LOG`) and `-q`.
pub fn init(verbose: u8, quiet: bool) {
    let level = match verbose {
        // -q: only errors (a retried request's warning is not one).
        0 if quiet => "error",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).build();
    log::set_max_level(logger.filter());
    let _ = log::set_boxed_logger(Box::new(NotingLogger(logger)));
    QUIET.store(quiet, Ordering::Relaxed);
}

/// env_logger's logger, noting in [`WARNED`] the warnings and errors it writes.
struct NotingLogger(env_logger::Logger);

/// Whether a record may carry a secret whatever `RUST_LOG` says: the HTTP client's debug
/// and trace lines carry presigned URLs (whose signature lets anyone read or write the
/// object for a while) and headers.
fn may_hold_secrets(metadata: &log::Metadata<'_>) -> bool {
    metadata.level() > log::Level::Info && metadata.target().starts_with("ureq")
}

impl log::Log for NotingLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        !may_hold_secrets(metadata) && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if may_hold_secrets(record.metadata()) {
            return;
        }
        if record.level() <= log::Level::Warn
            && self.0.matches(record)
            && !tartape::mount::is_reply_nobody_awaits(record)
        {
            WARNED.store(true, Ordering::Relaxed);
        }
        self.0.log(record);
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Whether a warning or an error was logged so far.
pub fn warned() -> bool {
    WARNED.load(Ordering::Relaxed)
}

/// Whether `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// What a command prints on standard output when it succeeds: lines of text or JSON,
/// buffered, nothing at all with `-q`. Write errors name `<stdout>`.
pub struct Out {
    out: Option<BufWriter<StdoutLock<'static>>>,
}

impl Out {
    /// Standard output, or nothing with `-q`.
    pub fn stdout() -> Out {
        Out {
            out: (!quiet()).then(|| BufWriter::new(io::stdout().lock())),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, line: impl std::fmt::Display) -> Result<()> {
        match &mut self.out {
            Some(out) => writeln!(out, "{line}").map_err(stdout_error),
            None => Ok(()),
        }
    }

    /// Writes one JSON value on a line of its own.
    pub fn json(&mut self, value: &serde_json::Value) -> Result<()> {
        self.line(value)
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.out {
            Some(out) => out.flush().map_err(stdout_error),
            None => Ok(()),
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A write to standard output failed.
pub fn stdout_error(e: io::Error) -> Error {
    Error::io("<stdout>", e)
}

/// A warning about a command that succeeded, on standard error; nothing with `-q`, which
/// (as rsync's) keeps every message but errors.
pub fn warn(message: impl std::fmt::Display) {
    if !quiet() {
        eprintln!("warning: {message}");
    }
}

/// A note on standard error about a command that succeeded (`already complete`); nothing
/// with `-q`.
pub fn note(message: impl std::fmt::Display) {
    if !quiet() {
        eprintln!("{message}");
    }
}

/// Progress goes to standard error when it is a terminal, unless `-q`.
pub fn progress_shown() -> bool {
    !quiet() && io::stderr().is_terminal()
}

/// A spinner saying `what` is going on, when progress is shown.
pub fn spinner(what: &'static str) -> Option<ProgressBar> {
    if !progress_shown() {
        return None;
    }
    let bar = ProgressBar::new_spinner().with_prefix(what);
    bar.set_style(ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})").ok()?);
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// A bar of `total` bytes (bytes, rate, ETA, a message), when progress is shown.
pub fn bytes_bar(total: u64) -> Option<ProgressBar> {
    bar_with(
        total,
        "{bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
    )
}

/// A bar of `total` bytes with a prefix (`part 3/12`) before them.
pub fn parts_bar(total: u64) -> Option<ProgressBar> {
    bar_with(
        total,
        "{prefix} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
    )
}

fn bar_with(total: u64, template: &str) -> Option<ProgressBar> {
    if !progress_shown() {
        return None;
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}

/// Exit statuses (SPEC §6), decided here and nowhere else. Usage errors found by clap exit
/// with 2 before any of this runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; for `verify`: the tape is intact.
    Success = 0,
    /// Failed; for `verify`: the tape is not intact.
    Failure = 1,
    /// For `verify`: the tape could not be checked (no catalog, an unreadable or
    /// corrupted one, a usage error).
    Unchecked = 2,
    /// Stopped by SIGINT or SIGTERM, what was done kept (128 + SIGINT, as shells say).
    Interrupted = 130,
}

impl Exit {
    /// The status of a command that failed with `e`.
    pub fn of_error(e: &Error, verifying: bool) -> Exit {
        match e {
            // Discrepancies, a source that is gone or not the recorded directory: not
            // intact.
            Error::NotIntact { .. } | Error::Integrity { .. } | Error::Source { .. } => {
                Exit::Failure
            }
            _ if verifying => Exit::Unchecked,
            _ => Exit::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The exit status of a command's result; the one place an error is printed, as one line.
pub fn finish(result: Result<Exit>, verifying: bool) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e}");
            Exit::of_error(&e, verifying).into()
        }
    }
}

/// A command stopped by SIGINT or SIGTERM: one line saying so and how to go on.
pub fn interrupted(how_to_go_on: &str) -> Exit {
    eprintln!("interrupted: {how_to_go_on}");
    Exit::Interrupted
}

/// A usage error as one line (clap's first paragraph, its lines joined) and exit status 2;
/// `--help` and `--version` as clap prints them.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("{line} (see --help)");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn exit_statuses_are_decided_in_one_place() {
        let corrupt = Error::corrupt(Path::new("c.db"), "x");
        let changed = Error::Integrity {
            path: "t/a".into(),
            change: "missing".into(),
        };
        let not_intact = Error::NotIntact {
            root: PathBuf::from("t"),
            count: 2,
        };
        assert_eq!(Exit::of_error(&corrupt, false), Exit::Failure);
        assert_eq!(Exit::of_error(&corrupt, true), Exit::Unchecked);
        assert_eq!(Exit::of_error(&changed, true), Exit::Failure);
        assert_eq!(Exit::of_error(&not_intact, true), Exit::Failure);
        assert_eq!(
            Exit::of_error(&Error::Usage("x".into()), true),
            Exit::Unchecked
        );
        assert_eq!(
            Exit::of_error(&Error::Usage("x".into()), false),
            Exit::Failure
        );
        assert_eq!(ExitCode::from(Exit::Unchecked), ExitCode::from(2));
    }
}
