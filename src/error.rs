//! The one error type of the library. Every variant carries the context a user needs to
//! act on it (the path, what was expected, what was found) and keeps what caused it (an
//! I/O or SQLite error is its `source()`); lists of problems stay lists until they are
//! printed. `Display` is one line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many items of a list a one-line message shows before `… and N more`.
const SHOWN: usize = 10;

/// One way in which the source no longer matches the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    /// The entry's arc path, lossily made UTF-8 for printing.
    pub arc_path: String,
    /// What changed, old value first: `size 1000 → 1200`, `missing`, `mtime …`.
    pub change: String,
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.arc_path, self.change)
    }
}

/// A path and what is wrong with it.
pub type Problem = (PathBuf, String);

/// Everything that can go wrong in tartape.
#[derive(Debug)]
pub enum Error {
    /// An I/O error on a named path.
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The error the operating system returned.
        source: io::Error,
    },
    /// Bad arguments or a request that makes no sense (offset out of range, …).
    Usage(String),
    /// The source directory is missing or is not a directory.
    Source {
        /// The source directory as given.
        path: PathBuf,
        /// What it is instead (`not a directory`, …).
        problem: String,
    },
    /// A catalog already exists and `--force` was not given.
    CatalogExists(PathBuf),
    /// No catalog where one was expected.
    CatalogMissing(PathBuf),
    /// The catalog failed validation: unknown version, truncated, corrupted, tampered.
    CatalogCorrupt {
        /// The catalog file.
        path: PathBuf,
        /// The check that failed, with what was expected and found.
        problem: String,
    },
    /// The catalog is not a regular file, or changed while being opened; says nothing
    /// about its content.
    CatalogUnreadable {
        /// The catalog path.
        path: PathBuf,
        /// Why it cannot be read (`not a regular file (it is a FIFO)`, …).
        problem: String,
    },
    /// SQLite could not read the catalog (permissions, I/O, …): not a validation failure.
    Sqlite {
        /// The catalog file.
        path: PathBuf,
        /// SQLite's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Recording found entries that cannot be written as ustar (all listed at once).
    Constraints(Vec<Problem>),
    /// Recording found unreadable inputs (all listed at once).
    Unreadable(Vec<Problem>),
    /// The source no longer matches the recorded snapshot.
    Integrity {
        /// The arc path of the entry that changed, lossily made UTF-8.
        path: String,
        /// What changed (see [`Discrepancy::change`]).
        change: String,
    },
    /// The source of a tape to be mounted changed since recording: every discrepancy.
    Changed {
        /// The source directory of the tape.
        source: PathBuf,
        /// Every entry that no longer matches, in tape order.
        discrepancies: Vec<Discrepancy>,
    },
    /// `verify` found discrepancies (listed on their own): the tape is not intact.
    NotIntact {
        /// The source directory that was verified.
        root: PathBuf,
        /// How many discrepancies were found.
        count: usize,
    },
    /// An error of the mount front end.
    Mount(String),
    /// A volume (or archive) read back by `restore` is not this tape's: foreign, damaged,
    /// truncated.
    Volume {
        /// The file read back: a volume, an archive, or the output `--continue` extends.
        path: PathBuf,
        /// What differs from the tape, and where.
        problem: String,
    },
    /// Volumes that `restore` needs are not in PLACE (all of them, named).
    MissingVolumes {
        /// The folder given to `--from`.
        place: PathBuf,
        /// The file name of every missing volume, in part order.
        names: Vec<String>,
    },
    /// An object store refused a request for good, or could not be reached.
    Remote {
        /// The store's endpoint URL.
        endpoint: String,
        /// The bucket.
        bucket: String,
        /// The S3 error code (`NoSuchBucket`, `InvalidAccessKeyId`, …), or what kept the
        /// store from answering (`connection refused`).
        code: String,
        /// The HTTP status of the answer; 0 when none came.
        status: u16,
        /// The store's message, maybe empty.
        message: String,
    },
    /// An object in a store is not what the tape says it must be (a size, a fingerprint,
    /// an ETag that differs).
    Object {
        /// `s3://BUCKET/KEY`.
        url: String,
        /// What differs.
        problem: String,
    },
    /// Stopped on request (SIGINT or SIGTERM): what was done is kept.
    Interrupted,
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

impl From<Discrepancy> for Error {
    fn from(d: Discrepancy) -> Error {
        Error::Integrity {
            path: d.arc_path,
            change: d.change,
        }
    }
}

/// `a: x; b: y` for every problem.
/// The first [`SHOWN`] problems of `list` for a one-line error, each path cut to
/// [`SHOWN_PATH`] characters in its middle; `-v` logs them all, whole (see `record`).
fn problems(list: &[Problem]) -> String {
    let mut line = list
        .iter()
        .take(SHOWN)
        .map(|(p, why)| format!("{}: {why}", shortened(&p.display().to_string())))
        .collect::<Vec<_>>()
        .join("; ");
    if list.len() > SHOWN {
        line.push_str(&format!(
            "; … and {} more (-v lists them all)",
            list.len() - SHOWN
        ));
    }
    line
}

/// Characters of a path a one-line error shows, at most.
const SHOWN_PATH: usize = 200;

/// `path`, or its first and last characters around `…` when longer than [`SHOWN_PATH`].
fn shortened(path: &str) -> String {
    let chars = path.chars().count();
    if chars <= SHOWN_PATH {
        return path.to_string();
    }
    let half = SHOWN_PATH / 2;
    let head: String = path.chars().take(half).collect();
    let tail: String = path.chars().skip(chars - half).collect();
    format!("{head}…{tail}")
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
            Error::Sqlite { path, source } => {
                write!(f, "{}: cannot read the catalog: {}", path.display(), source)
            }
            Error::Constraints(list) => write!(
                f,
                "{} path(s) cannot be written as ustar, no catalog written: {}",
                list.len(),
                problems(list)
            ),
            Error::Unreadable(list) => write!(
                f,
                "{} unreadable path(s), no catalog written (--skip-unreadable skips them): {}",
                list.len(),
                problems(list)
            ),
            Error::Integrity { path, change } => {
                write!(f, "integrity error: {path}: {change}")
            }
            Error::Changed {
                source,
                discrepancies,
            } => {
                let n = discrepancies.len();
                write!(
                    f,
                    "{}: the source no longer matches its tape ({n} discrepanc{}), not \
                     mounting: ",
                    source.display(),
                    if n == 1 { "y" } else { "ies" },
                )?;
                for (i, d) in discrepancies.iter().take(SHOWN).enumerate() {
                    write!(f, "{}{d}", if i == 0 { "" } else { "; " })?;
                }
                if n > SHOWN {
                    write!(
                        f,
                        "; … and {} more (tartape verify {} lists them all)",
                        n - SHOWN,
                        source.display()
                    )?;
                }
                f.write_str(" (record it again with `tartape record --force`)")
            }
            Error::NotIntact { root, count } => write!(
                f,
                "{}: {count} discrepanc{}, the tape is not intact",
                root.display(),
                if *count == 1 { "y" } else { "ies" }
            ),
            Error::Mount(msg) => f.write_str(msg),
            Error::Volume { path, problem } => write!(f, "{}: {problem}", path.display()),
            Error::MissingVolumes { place, names } => {
                let n = names.len();
                write!(
                    f,
                    "{}: {n} needed volume{} missing, nothing restored: ",
                    place.display(),
                    if n == 1 { " is" } else { "s are" }
                )?;
                // Every one of them: the user has to find them all before retrying.
                f.write_str(&names.join(", "))
            }
            Error::Remote {
                endpoint,
                bucket,
                code,
                status,
                message,
            } => {
                write!(f, "{endpoint}, bucket {bucket}: {code}")?;
                if *status > 0 {
                    write!(f, " (HTTP {status})")?;
                }
                let message = one_line(message);
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Error::Object { url, problem } => write!(f, "{url}: {problem}"),
            Error::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// A message from elsewhere on one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Sqlite { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_show_ten_and_say_how_many_more() {
        let d = |i: usize| Discrepancy {
            arc_path: format!("t/f{i}"),
            change: "missing".into(),
        };
        let changed = |n: usize| Error::Changed {
            source: PathBuf::from("t"),
            discrepancies: (0..n).map(d).collect(),
        };
        let ten = changed(10).to_string();
        assert!(ten.contains("(10 discrepancies)") && ten.contains("t/f9: missing"));
        assert!(!ten.contains("more"), "{ten}");
        let twelve = changed(12).to_string();
        assert!(twelve.contains("t/f9: missing; … and 2 more (tartape verify t lists them all)"));
        assert!(!twelve.contains("t/f10"), "{twelve}");
        assert!(changed(1).to_string().contains("(1 discrepancy)"));
        let io = Error::io("x", io::Error::from(io::ErrorKind::NotFound));
        assert!(std::error::Error::source(&io).is_some());
        let unreadable = Error::Unreadable(vec![
            (PathBuf::from("a"), "permission denied".into()),
            (PathBuf::from("b"), "permission denied".into()),
        ]);
        assert_eq!(
            unreadable.to_string(),
            "2 unreadable path(s), no catalog written (--skip-unreadable skips them): \
             a: permission denied; b: permission denied"
        );
    }

    #[test]
    fn long_lists_and_long_paths_are_cut_in_one_line_errors() {
        let long = format!("{}x", "d/".repeat(3000));
        let list: Vec<Problem> = (0..4106)
            .map(|i| (PathBuf::from(format!("{long}{i}")), "too long".into()))
            .collect();
        let line = Error::Constraints(list).to_string();
        assert!(
            line.starts_with("4106 path(s) cannot be written as ustar"),
            "{line}"
        );
        assert!(
            line.ends_with("; … and 4096 more (-v lists them all)"),
            "{line}"
        );
        assert_eq!(line.matches(": too long").count(), SHOWN);
        assert!(line.len() < 4000, "{} bytes", line.len());
        assert!(
            line.contains("d/d/d/…") && line.contains("d/d/x9: too long"),
            "{line}"
        );
        let short = Error::Constraints(vec![(PathBuf::from("a/b"), "bad".into())]);
        assert!(short.to_string().ends_with(": a/b: bad"));
    }
}
