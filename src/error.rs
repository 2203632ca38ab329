//! The one error type of the library. Every variant carries the context a user needs to
//! act on it (the path, what was expected, what was found); `Display` is one line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tartape.
#[derive(Debug)]
pub enum Error {
    /// An I/O error on a named path.
    Io { path: PathBuf, source: io::Error },
    /// Bad arguments or a request that makes no sense (offset out of range, …).
    Usage(String),
    /// The source directory is missing or is not a directory.
    Source { path: PathBuf, problem: String },
    /// A catalog already exists and `--force` was not given.
    CatalogExists(PathBuf),
    /// No catalog where one was expected.
    CatalogMissing(PathBuf),
    /// The catalog cannot be trusted: unknown version, truncated, corrupted, tampered.
    CatalogCorrupt { path: PathBuf, problem: String },
    /// The catalog could not be read at all (not a regular file, permissions, I/O); says
    /// nothing about its content.
    CatalogUnreadable { path: PathBuf, problem: String },
    /// Recording found entries that cannot be written as ustar (all listed at once).
    Constraints { count: usize, report: String },
    /// Recording found unreadable inputs (all listed at once).
    Unreadable { count: usize, report: String },
    /// The source no longer matches the recorded snapshot.
    Integrity { path: String, change: String },
    /// An error of the mount front end.
    Mount(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupted-catalog error.
    pub fn corrupt(path: &Path, problem: impl Into<String>) -> Error {
        Error::CatalogCorrupt {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::Usage(msg) => f.write_str(msg),
            Error::Source { path, problem } => write!(f, "{}: {}", path.display(), problem),
            Error::CatalogExists(path) => write!(
                f,
                "{}: a catalog already exists (use --force to replace it)",
                path.display()
            ),
            Error::CatalogMissing(path) => write!(
                f,
                "{}: no catalog found (run `tartape record` first, or pass --catalog)",
                path.display()
            ),
            Error::CatalogCorrupt { path, problem } => {
                write!(f, "{}: corrupted catalog: {}", path.display(), problem)
            }
            Error::CatalogUnreadable { path, problem } => {
                write!(
                    f,
                    "{}: cannot read the catalog: {}",
                    path.display(),
                    problem
                )
            }
            Error::Constraints { count, report } => write!(
                f,
                "{count} path(s) cannot be written as ustar, no catalog written: {report}"
            ),
            Error::Unreadable { count, report } => write!(
                f,
                "{count} unreadable path(s), no catalog written (--skip-unreadable skips them): {report}"
            ),
            Error::Integrity { path, change } => {
                write!(f, "integrity error: {path}: {change}")
            }
            Error::Mount(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
