//! The `tartape` command line: a thin shell over the library. clap types stay here; the
//! one place that prints an error is `main`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

mod mount_cmd;
use indicatif::{ProgressBar, ProgressStyle};
use mount_cmd::MountArgs;

use tartape::tape::EntryLayout;
use tartape::text::{counted, iso8601};
use tartape::volume::{NameTemplate, Volumes};
use tartape::{Error, Event, HashAlgo, Kind, Located, Result, Tape, TapeRecorder, VerifyLevel};

#[derive(Parser)]
#[command(
    name = "tartape",
    version,
    about = "Record a directory once, then serve its deterministic TAR archive byte by byte",
    long_about = "tartape records a directory into a small SQLite catalog that fixes the exact \
byte layout of a deterministic TAR archive (ustar), then serves any byte range of that archive \
on demand: as a stream that resumes from any byte, or as a read-only FUSE mount holding one \
virtual archive.tar. The source must not change after recording; every byte served is checked \
against the recorded snapshot.",
    after_help = "Examples:\n  tartape record photos && tartape stream photos > photos.tar\n  \
tartape mount photos /mnt/tape\n\n\
Exit status: 0 success, 1 failure, 2 usage error (verify: 1 not intact, 2 could not check). \
`tartape COMMAND --help` says more."
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress bar and no summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct CatalogArg {
    /// Catalog file to use instead of DIR/.tartape/index.db.
    #[arg(long, value_name = "PATH")]
    catalog: Option<PathBuf>,
}

#[derive(Args)]
struct RestoreArgs {
    /// The tape's catalog (e.g. the `<name>_<fp8>.tartape` copy a volume mount holds).
    catalog: PathBuf,
    /// A folder holding the volume files, or one whole archive.tar.
    #[arg(long, value_name = "PLACE")]
    from: PathBuf,
    /// Archive paths to extract (a directory means its subtree); none means everything.
    paths: Vec<OsString>,
    /// Extract into DEST (created if missing).
    #[arg(
        short = 'C',
        long = "directory",
        value_name = "DEST",
        default_value = "."
    )]
    dest: PathBuf,
    /// Replace files and symlinks that already exist (kept otherwise).
    #[arg(long)]
    force: bool,
    /// The volume size, when the files in PLACE cannot tell it (see `tartape volumes`).
    #[arg(long, value_name = "SIZE", value_parser = parse_volume_size)]
    volume_size: Option<u64>,
    /// The volume name template the volumes were written with.
    #[arg(long, value_name = "TEMPLATE", default_value = tartape::volume::DEFAULT_TEMPLATE)]
    volume_name: String,
}

// How the tape is cut into volumes (SPEC §8). (A plain comment: a doc comment would
// replace the description of the subcommands that flatten it.)
#[derive(Args, Clone)]
struct VolumeArgs {
    /// Cut the tape into volumes of SIZE bytes: a multiple of 512, with an optional binary
    /// suffix (K = 1024, M, G, T). The last volume holds the rest.
    #[arg(long, value_name = "SIZE", value_parser = parse_volume_size)]
    volume_size: Option<u64>,
    /// Volume names: `{name}` (the root name), `{fingerprint}`, `{fingerprint:.N}` (its
    /// first N digits), `{index}` (k-1), `{part}` (k), `{pindex}` (k zero-padded to at
    /// least 3 digits), `{total}`.
    #[arg(long, value_name = "TEMPLATE", default_value = tartape::volume::DEFAULT_TEMPLATE, requires = "volume_size")]
    volume_name: String,
}

impl VolumeArgs {
    fn template(&self) -> Result<NameTemplate> {
        NameTemplate::parse(&self.volume_name)
    }
}

fn parse_volume_size(text: &str) -> std::result::Result<u64, String> {
    tartape::volume::parse_volume_size(text).map_err(|e| e.to_string())
}

/// `--offset`: bytes, with an optional binary suffix (`1M` = 1048576).
fn parse_offset(text: &str) -> std::result::Result<u64, String> {
    tartape::volume::parse_size(text, "--offset").map_err(|e| e.to_string())
}

/// `--length`: bytes, with an optional binary suffix.
fn parse_length(text: &str) -> std::result::Result<u64, String> {
    tartape::volume::parse_size(text, "--length").map_err(|e| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum HashArg {
    Md5,
    Sha256,
}

#[derive(Subcommand)]
// Build only the arguments of the subcommand that runs: building all of them cost ~0.1 ms
// of every run, a twentieth of recording a tree of a few files.
#[command(defer = true)]
enum Command {
    /// Record DIR into a catalog (default DIR/.tartape/index.db).
    #[command(after_help = "Examples:\n  tartape record photos\n  \
tartape record photos --catalog /var/lib/tartape/photos.db --exclude '*.tmp' --hash sha256\n\n\
Exit status: 0 recorded, 1 failure (nothing is written: unreadable or unwritable entries \
are all listed), 2 usage error.")]
    Record {
        /// Directory to record.
        dir: PathBuf,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Leave out paths matching GLOB (matched against the relative path and the file
        /// name; an excluded directory drops its whole subtree). Repeatable.
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Read every file and store its digest (for `verify --deep`).
        #[arg(long, value_enum)]
        hash: Option<HashArg>,
        /// Keep real uid/gid, user and group names and permission bits.
        #[arg(long)]
        no_anonymize: bool,
        /// Name of the top directory inside the archive (default: DIR's name).
        #[arg(long, value_name = "NAME")]
        arc_root: Option<OsString>,
        /// Replace an existing catalog.
        #[arg(long)]
        force: bool,
        /// Skip unreadable files and directories (listed in the summary) instead of failing.
        #[arg(long)]
        skip_unreadable: bool,
        /// Refuse what the Python tartape refuses (a header path over 255 bytes, with a
        /// component over 100 bytes or no ustar split; a symlink target over 100 bytes):
        /// all are listed and no catalog is written. Without it, entries whose path or
        /// target does not fit ustar get a PAX header.
        #[arg(long)]
        strict_ustar: bool,
        /// The summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the archive, or a byte range of it, to a file or pipe.
    #[command(
        after_help = "Examples:\n  tartape stream photos | ssh backup 'cat > photos.tar'\n  \
tartape stream photos --offset 1G --length 512M > part2\n  \
tartape stream photos -o photos.tar --continue\n\n\
Exit status: 0 written, 1 failure (a source that changed: what was written is a correct \
prefix), 2 usage error."
    )]
    Stream {
        /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
        dir: PathBuf,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Output file (default: standard output, which must not be a terminal).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// First byte to write (suffixes K, M, G, T: powers of 1024).
        #[arg(long, value_name = "N", default_value = "0", value_parser = parse_offset)]
        offset: u64,
        /// Number of bytes to write (default: to the end; suffixes K, M, G, T).
        #[arg(long, value_name = "N", value_parser = parse_length)]
        length: Option<u64>,
        /// Resume into FILE (-o) at its size, like `curl -C -` / `wget -c`: its last 512
        /// bytes must be the tape's bytes there (otherwise FILE is left untouched).
        #[arg(long = "continue", requires = "output", conflicts_with = "offset")]
        resume: bool,
        /// Write JSON events (file_start, file_end with MD5, tape_completed), one per line,
        /// to FILE, or to standard error with `-`.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        #[command(flatten)]
        volumes: VolumeArgs,
        /// Write volume K (1 = the first) instead of the whole tape; --offset and --length
        /// then count inside the volume.
        #[arg(long, value_name = "K", requires = "volume_size")]
        volume: Option<u64>,
    },
    /// Check that the source still matches the recording; lists every discrepancy.
    #[command(
        after_help = "Examples:\n  tartape verify photos\n  tartape verify photos --deep\n\n\
Exit status: 0 intact, 1 not intact (every discrepancy listed, added objects named), \
2 could not check (no catalog, unreadable catalog) or usage error."
    )]
    Verify {
        /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
        dir: PathBuf,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Also re-read every file and compare it with the recorded digest.
        #[arg(long)]
        deep: bool,
        /// One JSON object: intact, entry_count, fingerprint, discrepancies (path, change).
        #[arg(long)]
        json: bool,
    },
    /// Show the tape's fingerprint, sizes, counts and recording options.
    #[command(
        after_help = "Examples:\n  tartape info photos\n  tartape info photos --json\n\n\
Exit status: 0 shown, 1 failure (no catalog), 2 usage error."
    )]
    Info {
        /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
        dir: PathBuf,
        #[command(flatten)]
        catalog: CatalogArg,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List entries: start offset, end offset, kind, mode, size, archive path.
    #[command(
        after_help = "Examples:\n  tartape ls photos | grep jpg\n  tartape ls photos --json\n\n\
Exit status: 0 listed, 1 failure (no catalog), 2 usage error."
    )]
    Ls {
        /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
        dir: PathBuf,
        #[command(flatten)]
        catalog: CatalogArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show where an entry lies in the tape, or what covers byte N.
    #[command(
        after_help = "Examples:\n  tartape locate photos photos/2024/a.jpg\n  \
tartape locate photos --offset 1G --json\n\n\
Exit status: 0 found, 1 failure (no such entry, offset past the end), 2 usage error."
    )]
    Locate {
        /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
        dir: PathBuf,
        /// Archive path of the entry (e.g. `photos/2024/a.jpg`).
        #[arg(required_unless_present = "offset", conflicts_with = "offset")]
        path: Option<OsString>,
        /// A byte offset in the tape (suffixes K, M, G, T: powers of 1024).
        #[arg(long, value_name = "N", value_parser = parse_offset)]
        offset: Option<u64>,
        #[command(flatten)]
        catalog: CatalogArg,
        // With --volume-size: which volumes, and where inside them, hold the entry.
        #[command(flatten)]
        volumes: VolumeArgs,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the volumes the tape is cut into: part, name, byte window, first and last entry.
    #[command(
        after_help = "Examples:\n  tartape volumes photos --volume-size 2G\n  \
tartape stream photos --volume-size 2G --volume 3 -o photos.tar.003\n  \
tartape locate photos photos/2024/a.jpg --volume-size 2G --json\n\nExit status: 0 listed, \
1 failure (no catalog, a source that is not the recorded one), 2 usage error."
    )]
    Volumes {
        /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
        dir: PathBuf,
        #[command(flatten)]
        catalog: CatalogArg,
        #[command(flatten)]
        volumes: VolumeArgs,
        /// One JSON object per line (keys part, name, start, end, size, first_entry,
        /// last_entry).
        #[arg(long)]
        json: bool,
    },
    /// Extract entries from a tape's volumes (or one archive.tar), reading only the
    /// volumes that hold them.
    #[command(
        after_help = "PLACE is a folder holding the volume files (found by their names) \
or one whole archive.tar. Every needed volume that is missing is named before anything is \
written; every header read back must equal the catalog's; content is checked against the \
recorded digests when the tape has them (record --hash).\n\nExamples:\n  \
tartape restore uploads/photos_1a2b3c4d.tartape --from uploads photos/2024/a.jpg -C /tmp/out\n  \
tartape restore photos.db --from archive.tar -C restored\n\nExit status: 0 restored, 1 failed \
(nothing is left half-written), 2 usage error."
    )]
    Restore(RestoreArgs),
    /// Mount the tape read-only (FUSE): one file, archive.tar, served from the source.
    #[command(after_help = "Examples:\n  tartape mount photos /mnt/tape\n  \
tartape mount photos /mnt/tape -o allow_other,verify=quick\n  \
mount -t fuse.tartape /srv/photos /mnt/tape -o allow_other     (through mount.fuse3)\n\n\
Exit status: 0 mounted (or, with -f, unmounted cleanly), 1 failure (nothing is left \
mounted), 2 usage error.")]
    Mount(MountArgs),
    /// Unmount a tartape mount, also one whose serving process died.
    #[command(after_help = "Example:\n  tartape umount /mnt/tape\n\n\
Exit status: 0 unmounted, 1 failure (not mounted, busy, not the owner), 2 usage error.")]
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// List the active tartape mounts: mount point, source, catalog, fingerprint, serving
    /// pid and log file.
    #[command(
        after_help = "Examples:\n  tartape mounts\n  tartape mounts --json\n\n\
Exit status: 0 listed (maybe none), 1 failure, 2 usage error."
    )]
    Mounts {
        /// One JSON object per line (keys mountpoint, source, catalog, fingerprint, pid, log).
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for SHELL (e.g. `tartape completions bash >
    /// /etc/bash_completion.d/tartape`).
    #[command(
        after_help = "Examples:\n  tartape completions bash > /etc/bash_completion.d/tartape\n  \
tartape completions fish > ~/.config/fish/completions/tartape.fish\n\n\
Exit status: 0 printed, 2 usage error (an unknown shell)."
    )]
    Completions {
        /// The shell.
        shell: ShellArg,
    },
    /// Print the man page (roff; e.g. `tartape man > /usr/local/share/man/man1/tartape.1`).
    #[command(
        after_help = "Example:\n  tartape man > /usr/local/share/man/man1/tartape.1\n\n\
Exit status: 0 printed, 1 failure (standard output closed)."
    )]
    Man,
}

/// Shells `tartape completions` writes for.
#[derive(Clone, Copy, ValueEnum)]
enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

fn main() -> ExitCode {
    // SAFETY: this runs first, on the only thread: no other thread can use SQLite while
    // it is configured, and setting a signal's disposition to its default is sound.
    unsafe {
        // Like cat and tar: a closed pipe ends the process quietly.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        tartape::catalog::configure_sqlite();
    }
    raise_open_file_limit();
    let cli = match Cli::try_parse().or_else(helper_form) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).build();
    log::set_max_level(logger.filter());
    let _ = log::set_boxed_logger(Box::new(NotingLogger(logger)));
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let verifying = matches!(cli.command, Command::Verify { .. });
    match run(cli.command) {
        Ok(exit) => exit.into(),
        // The one place an error is printed.
        Err(e) => {
            eprintln!("error: {e}");
            Exit::of_error(&e, verifying).into()
        }
    }
}

/// mount(8)'s helper form (what `mount.fuse3` runs for type `fuse.tartape`): `tartape
/// SOURCE MOUNTPOINT -o OPTS` is `tartape mount SOURCE MOUNTPOINT -o OPTS`. Tried only
/// when the command line did not parse, its first word unknown and a path.
fn helper_form(error: clap::Error) -> std::result::Result<Cli, clap::Error> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let unknown = error.kind() == clap::error::ErrorKind::InvalidSubcommand;
    // A source is a path: a misspelt subcommand stays an error about it.
    let source = |a: &OsString| a.as_encoded_bytes().contains(&b'/') || Path::new(a).is_dir();
    if !unknown || argv.len() < 3 || !source(&argv[1]) {
        return Err(error);
    }
    argv.insert(1, "mount".into());
    Cli::try_parse_from(argv).map_err(|_| error)
}

/// Whether a warning or an error was logged: a background mount that ends cleanly without
/// one removes its log.
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// env_logger's logger, noting in [`WARNED`] the warnings and errors it writes.
struct NotingLogger(env_logger::Logger);

impl log::Log for NotingLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn && self.0.matches(record) && !kernel_gave_up(record) {
            WARNED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.0.log(record);
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// fuser's error for a reply the kernel no longer takes: the request was interrupted, or
/// the mount went away while it was being answered (a `release` still in flight when
/// `tartape umount` came). Nobody waits for that reply, so it is logged but is no reason
/// to keep the log of a mount that ended cleanly.
fn kernel_gave_up(record: &log::Record<'_>) -> bool {
    record.target().starts_with("fuser")
        && record
            .args()
            .to_string()
            .starts_with("Failed to send FUSE reply")
}

/// Whether a warning or an error was logged so far.
fn warned() -> bool {
    WARNED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A usage error as one line (clap's first paragraph, its lines joined) and exit status 2;
/// `--help` and `--version` as clap prints them.
fn usage_error(e: clap::Error) -> ExitCode {
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

/// Exit statuses (SPEC §6), decided here and nowhere else. Usage errors found by clap exit
/// with 2 before any of this runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Done; for `verify`: the tape is intact.
    Success = 0,
    /// Failed; for `verify`: the tape is not intact.
    Failure = 1,
    /// For `verify`: the tape could not be checked (no catalog, an unreadable or
    /// corrupted one, a usage error).
    Unchecked = 2,
}

impl Exit {
    /// The status of a command that failed with `e`.
    fn of_error(e: &Error, verifying: bool) -> Exit {
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

fn run(command: Command) -> Result<Exit> {
    match command {
        Command::Record {
            dir,
            catalog,
            exclude,
            hash,
            no_anonymize,
            arc_root,
            force,
            skip_unreadable,
            strict_ustar,
            json,
        } => {
            let mut recorder = TapeRecorder::new(&dir)
                .catalog(catalog.catalog)
                .hash(hash.map(|h| match h {
                    HashArg::Md5 => HashAlgo::Md5,
                    HashArg::Sha256 => HashAlgo::Sha256,
                }))
                .anonymize(!no_anonymize)
                .arc_root(arc_root.map(|n| n.as_bytes().to_vec()))
                .force(force)
                .skip_unreadable(skip_unreadable)
                .strict_ustar(strict_ustar);
            for g in exclude {
                recorder = recorder.exclude(g);
            }
            let bar = spinner("recording");
            if let Some(bar) = bar.clone() {
                recorder = recorder.on_progress(move |n| bar.set_message(format!("{n} entries")));
            }
            let summary = recorder.commit();
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            // One write, not one per line (stdout is line-buffered).
            let summary = summary?;
            if quiet() {
                return Ok(Exit::Success);
            }
            let summary = if json {
                let paths = |list: &[(PathBuf, String)]| -> Vec<serde_json::Value> {
                    list.iter()
                        .map(
                            |(p, why)| serde_json::json!({"path": p.to_string_lossy(), "why": why}),
                        )
                        .collect()
                };
                let special: Vec<(PathBuf, String)> = summary
                    .skipped_special
                    .iter()
                    .map(|(p, kind)| (p.clone(), (*kind).to_string()))
                    .collect();
                let object = serde_json::json!({
                    "fingerprint": summary.fingerprint,
                    "catalog": summary.catalog.to_string_lossy(),
                    "entry_count": summary.files + summary.dirs + summary.symlinks,
                    "files": summary.files,
                    "dirs": summary.dirs,
                    "symlinks": summary.symlinks,
                    "long_entries": summary.long_entries,
                    "data_size": summary.data_size,
                    "total_size": summary.total_size,
                    "skipped_special": paths(&special),
                    "skipped_unreadable": paths(&summary.skipped_unreadable),
                });
                format!("{object}\n")
            } else {
                format!("{summary}\n")
            };
            io::stdout()
                .write_all(summary.as_bytes())
                .map_err(|e| Error::io("<stdout>", e))?;
        }
        Command::Stream {
            dir,
            catalog,
            output,
            offset,
            length,
            resume,
            events,
            volumes,
            volume,
        } => {
            let tape = Tape::open_with(&dir, catalog.catalog.as_deref())?;
            let (offset, length) = match (volume, volumes.volume_size) {
                (Some(k), Some(size)) => {
                    let (start, end) = Volumes::new(size, tape.total_size())?.window_of(k)?;
                    if offset > end - start {
                        return Err(Error::Usage(format!(
                            "--offset {offset} is past the end of volume {k} ({} bytes)",
                            end - start
                        )));
                    }
                    let left = end - start - offset;
                    (start + offset, Some(length.map_or(left, |l| l.min(left))))
                }
                (None, Some(_)) => {
                    return Err(Error::Usage(
                        "--volume-size needs --volume K to say which volume to write \
                         (`tartape volumes` lists them)"
                            .into(),
                    ));
                }
                _ => (offset, length),
            };
            stream(&tape, output, offset, length, resume, events)?
        }
        Command::Verify {
            dir,
            catalog,
            deep,
            json,
        } => {
            return verify(&dir, catalog.catalog.as_deref(), deep, json);
        }
        Command::Info { dir, catalog, json } => info(&dir, catalog.catalog.as_deref(), json)?,
        Command::Ls { dir, catalog, json } => ls(&dir, catalog.catalog.as_deref(), json)?,
        Command::Locate {
            dir,
            path,
            offset,
            catalog,
            volumes,
            json,
        } => locate(
            &dir,
            catalog.catalog.as_deref(),
            path,
            offset,
            &volumes,
            json,
        )?,
        Command::Volumes {
            dir,
            catalog,
            volumes,
            json,
        } => list_volumes(&dir, catalog.catalog.as_deref(), &volumes, json)?,
        Command::Restore(args) => restore(args)?,
        Command::Mount(args) => mount_cmd::run_mount(args)?,
        Command::Umount { mountpoint } => mount_cmd::run_umount(&mountpoint)?,
        Command::Mounts { json } => mount_cmd::run_mounts(json)?,
        Command::Completions { shell } => {
            let shell = match shell {
                ShellArg::Bash => clap_complete::Shell::Bash,
                ShellArg::Zsh => clap_complete::Shell::Zsh,
                ShellArg::Fish => clap_complete::Shell::Fish,
            };
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "tartape", &mut io::stdout());
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| Error::io("<man page>", e))?;
            io::stdout()
                .write_all(&page)
                .map_err(|e| Error::io("<stdout>", e))?;
        }
    }
    Ok(Exit::Success)
}

/// `tartape verify`: 0 when the tape is intact, 1 when it is not (every discrepancy
/// listed), 2 when it could not be checked (no catalog, an unreadable or corrupted one).
fn verify(dir: &Path, catalog: Option<&Path>, deep: bool, json: bool) -> Result<Exit> {
    let level = if deep {
        VerifyLevel::Deep
    } else {
        VerifyLevel::Full
    };
    let tape = Tape::open_with(dir, catalog)?;
    let bar = spinner("verifying");
    let found = tape.verify(level);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let found = found?;
    if json {
        let discrepancies: Vec<serde_json::Value> = found
            .iter()
            .map(|d| serde_json::json!({"path": d.arc_path, "change": d.change}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "intact": found.is_empty(),
                "entry_count": tape.entry_count(),
                "fingerprint": tape.fingerprint(),
                "discrepancies": discrepancies,
            })
        );
    }
    if found.is_empty() {
        if json {
            return Ok(Exit::Success);
        }
        println!(
            "ok: {} entries match the recording ({})",
            tape.entry_count(),
            tape.fingerprint()
        );
        return Ok(Exit::Success);
    }
    if !json {
        for d in &found {
            println!("{d}");
        }
    }
    Err(Error::NotIntact {
        root: tape.root().to_path_buf(),
        count: found.len(),
    })
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

/// `-q`: no progress bar and no summary.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Progress goes to standard error when it is a terminal, unless `-q`.
fn progress_shown() -> bool {
    !quiet() && io::stderr().is_terminal()
}

fn spinner(what: &'static str) -> Option<ProgressBar> {
    if !progress_shown() {
        return None;
    }
    let bar = ProgressBar::new_spinner().with_prefix(what);
    bar.set_style(ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})").ok()?);
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

fn stream(
    tape: &Tape,
    output: Option<PathBuf>,
    offset: u64,
    length: Option<u64>,
    resume: bool,
    events: Option<PathBuf>,
) -> Result<()> {
    let total = tape.total_size();
    if offset > total {
        return Err(Error::Usage(format!(
            "--offset {offset} is past the end of the tape ({total} bytes)"
        )));
    }
    let (mut offset, mut length) = (offset, length);
    let stdout = io::stdout();
    let file = match &output {
        Some(p) if resume => {
            let end = length.map_or(total, |l| offset.saturating_add(l).min(total));
            let Some((file, have)) = open_to_continue(tape, p, offset, end)? else {
                eprintln!("{}: already complete ({} bytes)", p.display(), end - offset);
                return Ok(());
            };
            offset += have;
            length = length.map(|l| l.saturating_sub(have));
            Some(file)
        }
        Some(p) => Some(File::create(p).map_err(|e| Error::io(p, e))?),
        None if stdout.is_terminal() => {
            return Err(Error::Usage(
                "refusing to write a binary tape to a terminal; use -o FILE or a pipe".into(),
            ));
        }
        None => None,
    };
    let events_to_stderr = events.as_deref() == Some(Path::new("-"));
    let mut events_out: Option<(PathBuf, Box<dyn Write>)> = match events {
        None => None,
        Some(p) if events_to_stderr => Some((p, Box::new(io::stderr()))),
        Some(p) => {
            let f = File::create(&p).map_err(|e| Error::io(&p, e))?;
            Some((p, Box::new(BufWriter::new(f))))
        }
    };
    let end = length.map_or(total, |l| offset.saturating_add(l).min(total));
    let bar = (!events_to_stderr && progress_shown()).then(|| {
        let bar = ProgressBar::new(end - offset);
        if let Ok(style) = ProgressStyle::with_template(
            "{bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let with_events = events_out.is_some();
    let observe = |event: &Event<'_>| {
        match event {
            Event::Content { len, .. } => {
                if let Some(b) = &bar {
                    b.inc(*len);
                }
                return Ok(());
            }
            Event::Data(bytes) => {
                if let Some(b) = &bar {
                    b.inc(bytes.len() as u64);
                }
                return Ok(());
            }
            Event::FileStart { entry, .. } => {
                if let Some(b) = &bar {
                    b.set_message(entry.display_path());
                }
            }
            _ => {}
        }
        if let Some((p, w)) = events_out.as_mut() {
            writeln!(w, "{}", event_json(event)).map_err(|e| Error::io(&*p, e))?;
        }
        Ok(())
    };
    let player = tape.player().md5(with_events);
    let marks = with_events || bar.is_some();
    let result = match (&file, &output) {
        (Some(f), Some(name)) => player.write_to(offset, length, f, name, marks, observe),
        _ => player.write_to(
            offset,
            length,
            stdout.lock(),
            Path::new("<stdout>"),
            marks,
            observe,
        ),
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some((p, mut w)) = events_out {
        w.flush().map_err(|e| Error::io(&p, e))?;
    }
    result
}

/// `stream -o FILE --continue` of the tape range `[start, end)`: FILE opened at its end and
/// how many bytes of the range it holds, once its last 512 bytes (all of it when shorter)
/// were found equal to the tape's bytes there; `None` when it holds the whole range. A
/// missing FILE is created and holds nothing yet. FILE is not changed when refused.
fn open_to_continue(tape: &Tape, path: &Path, start: u64, end: u64) -> Result<Option<(File, u64)>> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let io_err = |e| Error::io(path, e);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "{}: --continue needs a regular file",
            path.display()
        )));
    }
    let have = meta.len();
    let want = end - start;
    if have > want {
        return Err(Error::Volume {
            path: path.to_path_buf(),
            problem: format!(
                "cannot continue: it has {have} bytes, more than the {want} to write \
                 (not this tape, or another range of it)"
            ),
        });
    }
    let n = have.min(512);
    let mut theirs = vec![0u8; n as usize];
    file.read_exact_at(&mut theirs, have - n).map_err(io_err)?;
    let mut ours = vec![0u8; n as usize];
    let read = tape.read_at(start + have - n, &mut ours)?;
    if read as u64 != n || theirs != ours {
        return Err(Error::Volume {
            path: path.to_path_buf(),
            problem: format!(
                "cannot continue: its last {n} bytes are not the tape's bytes at offset {} \
                 (not this tape, or changed); the file was left as it is",
                start + have - n
            ),
        });
    }
    if have == want {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(have)).map_err(io_err)?;
    Ok(Some((file, have)))
}

fn event_json(event: &Event<'_>) -> String {
    match event {
        Event::FileStart {
            entry,
            start_offset,
            resumed,
        } => serde_json::json!({
            "type": "file_start",
            "path": entry.display_path(),
            "start_offset": start_offset,
            "resumed": resumed,
        })
        .to_string(),
        Event::FileEnd {
            entry,
            end_offset,
            md5,
        } => serde_json::json!({
            "type": "file_end",
            "path": entry.display_path(),
            "end_offset": end_offset,
            "md5": md5,
        })
        .to_string(),
        Event::TapeCompleted { total_size } => {
            serde_json::json!({"type": "tape_completed", "total_size": total_size}).to_string()
        }
        Event::Data(_) | Event::Content { .. } => String::new(),
    }
}

fn info(dir: &Path, catalog: Option<&Path>, json: bool) -> Result<()> {
    let tape = Tape::open_with(dir, catalog)?;
    let meta = tape.meta();
    let (mut files, mut dirs, mut symlinks) = (0u64, 0u64, 0u64);
    tape.catalog().for_each_from(tartape::Ordinal(0), |e| {
        match e.kind {
            Kind::File => files += 1,
            Kind::Dir => dirs += 1,
            Kind::Symlink => symlinks += 1,
        }
        Ok(true)
    })?;
    let long_entries = tape.catalog().offsets().long_entries().len();
    let overhead = meta.total_size.saturating_sub(meta.data_size);
    let hash = meta.hash.map_or("none", HashAlgo::name);
    let catalog_path = tape.catalog().path().display().to_string();
    let source = tape.root().display().to_string();
    if json {
        let info = serde_json::json!({
            "fingerprint": meta.fingerprint,
            "total_size": meta.total_size,
            "entry_count": meta.entry_count,
            "files": files,
            "dirs": dirs,
            "symlinks": symlinks,
            "long_entries": long_entries,
            "data_size": meta.data_size,
            "overhead": overhead,
            "created_at": meta.created_at,
            "catalog": catalog_path,
            "source": source,
            "arc_root": String::from_utf8_lossy(&meta.arc_root),
            "anonymize": meta.anonymize,
            "hash": hash,
            "excludes": meta.excludes,
        });
        println!("{info}");
    } else {
        println!("fingerprint: {}", meta.fingerprint);
        println!(
            "entries: {} ({}, {}, {})",
            meta.entry_count,
            counted(files, "file", "files"),
            counted(dirs, "directory", "directories"),
            counted(symlinks, "symlink", "symlinks"),
        );
        if long_entries > 0 {
            println!("long entries: {long_entries} (with a PAX header)");
        }
        println!("data bytes: {}", meta.data_size);
        println!("tape size: {}", meta.total_size);
        println!(
            "overhead: {overhead} bytes ({:.2}%)",
            overhead as f64 * 100.0 / meta.total_size as f64
        );
        println!("created at: {}", iso8601(meta.created_at));
        println!("catalog: {catalog_path}");
        println!("source: {source}");
        println!(
            "options: anonymize={} hash={hash} excludes=[{}]",
            meta.anonymize,
            meta.excludes.join(", ")
        );
    }
    Ok(())
}

fn ls(dir: &Path, catalog: Option<&Path>, json: bool) -> Result<()> {
    let tape = Tape::open_with(dir, catalog)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let write_err = |e: io::Error| Error::io("<stdout>", e);
    tape.catalog().for_each_from(tartape::Ordinal(0), |e| {
        let path = e.display_path();
        if json {
            let line = serde_json::json!({
                "start_offset": e.start_offset,
                "end_offset": tartape::layout::end_offset(&e),
                "kind": e.kind.to_string(),
                "mode": format!("{:04o}", e.mode),
                "size": e.size,
                "path": path,
            });
            writeln!(out, "{line}")
        } else {
            writeln!(
                out,
                "{:>12} {:>12} {:<7} {:04o} {:>12} {path}",
                e.start_offset,
                tartape::layout::end_offset(&e),
                e.kind,
                e.mode,
                e.size
            )
        }
        .map_err(write_err)?;
        Ok(true)
    })?;
    out.flush().map_err(write_err)
}

/// A tape cut into volumes, with the names its volume files have.
struct VolumeNames<'t> {
    volumes: Volumes,
    template: NameTemplate,
    tape: &'t Tape,
}

impl<'t> VolumeNames<'t> {
    fn new(tape: &'t Tape, args: &VolumeArgs) -> Result<Option<VolumeNames<'t>>> {
        let Some(size) = args.volume_size else {
            return Ok(None);
        };
        Ok(Some(VolumeNames {
            volumes: Volumes::new(size, tape.total_size())?,
            template: args.template()?,
            tape,
        }))
    }

    fn name(&self, part: u64) -> Result<String> {
        let meta = self.tape.meta();
        let name = self
            .template
            .render(&meta.arc_root, &meta.fingerprint, &self.volumes, part)?;
        Ok(String::from_utf8_lossy(&name).into_owned())
    }

    /// The slices of tape range `[start, end)`, as JSON objects.
    fn slices_json(&self, start: u64, end: u64, source: bool) -> Result<Vec<serde_json::Value>> {
        self.volumes
            .slices(start, end)
            .into_iter()
            .map(|s| {
                let mut v = serde_json::json!({
                    "part": s.part,
                    "name": self.name(s.part)?,
                    "volume_offset": s.volume_offset,
                    "length": s.length,
                });
                if source {
                    v["source_offset"] = s.range_offset.into();
                }
                Ok(v)
            })
            .collect()
    }

    fn print_slices(&self, what: &str, start: u64, end: u64, source: bool) -> Result<()> {
        for s in self.volumes.slices(start, end) {
            let within = s.volume_offset;
            let file = if source {
                format!(
                    " = file bytes [{}, {})",
                    s.range_offset,
                    s.range_offset + s.length
                )
            } else {
                String::new()
            };
            println!(
                "{what} part {} {}: bytes [{within}, {}){file}",
                s.part,
                self.name(s.part)?,
                within + s.length
            );
        }
        Ok(())
    }
}

fn print_layout(l: &EntryLayout, volumes: Option<&VolumeNames<'_>>) -> Result<()> {
    let e = &l.entry;
    println!(
        "entry: {} ({}, {} bytes, ordinal {})",
        e.display_path(),
        e.kind,
        e.size,
        e.ordinal.0
    );
    if let Some((a, b)) = l.pax {
        println!("pax:     [{a}, {b})  (x header and records)");
    }
    println!("header:  [{}, {})", l.header.0, l.header.1);
    println!("content: [{}, {})", l.content.0, l.content.1);
    println!("padding: [{}, {})", l.padding.0, l.padding.1);
    if let Some(v) = volumes {
        println!(
            "volumes: {} of {} bytes",
            v.volumes.count(),
            v.volumes.size()
        );
        v.print_slices("header: ", l.start(), l.header.1, false)?;
        v.print_slices("content:", l.content.0, l.content.1, true)?;
    }
    Ok(())
}

fn layout_json(l: &EntryLayout, volumes: Option<&VolumeNames<'_>>) -> Result<serde_json::Value> {
    let e = &l.entry;
    let mut v = serde_json::json!({
        "path": e.display_path(),
        "kind": e.kind.to_string(),
        "size": e.size,
        "ordinal": e.ordinal.0,
        "start_offset": l.start(),
        "end_offset": l.end(),
        "pax": l.pax.map(|(a, b)| [a, b]),
        "header": [l.header.0, l.header.1],
        "content": [l.content.0, l.content.1],
        "padding": [l.padding.0, l.padding.1],
    });
    if let Some(vn) = volumes {
        v["volume_size"] = vn.volumes.size().into();
        v["volume_count"] = vn.volumes.count().into();
        v["header_slices"] = vn.slices_json(l.start(), l.header.1, false)?.into();
        v["slices"] = vn.slices_json(l.content.0, l.content.1, true)?.into();
    }
    Ok(v)
}

fn locate(
    dir: &Path,
    catalog: Option<&Path>,
    path: Option<OsString>,
    offset: Option<u64>,
    volume_args: &VolumeArgs,
    json: bool,
) -> Result<()> {
    let tape = Tape::open_with(dir, catalog)?;
    let volumes = VolumeNames::new(&tape, volume_args)?;
    let volumes = volumes.as_ref();
    if let Some(offset) = offset {
        let located = tape.locate(offset)?;
        let in_volume = volumes.map(|v| {
            let part = v.volumes.part_of(offset);
            (part, offset - (part - 1) * v.volumes.size())
        });
        if json {
            let mut out = match &located {
                Located::Footer { offset_in_footer } => serde_json::json!({
                    "offset": offset, "part": "footer", "offset_in_part": offset_in_footer,
                }),
                Located::Entry {
                    layout,
                    part,
                    offset_in_part,
                } => serde_json::json!({
                    "offset": offset,
                    "part": part.name(),
                    "offset_in_part": offset_in_part,
                    "entry": layout_json(layout, volumes)?,
                }),
            };
            if let (Some(v), Some((part, at))) = (volumes, in_volume) {
                out["volume"] = serde_json::json!({
                    "part": part, "name": v.name(part)?, "volume_offset": at,
                });
            }
            println!("{out}");
            return Ok(());
        }
        match &located {
            Located::Footer { offset_in_footer } => {
                println!("offset {offset}: footer, byte {offset_in_footer} of 1024");
            }
            Located::Entry {
                layout,
                part,
                offset_in_part,
            } => {
                println!(
                    "offset {offset}: {} of {}, byte {offset_in_part}",
                    part.name(),
                    layout.entry.display_path()
                );
                print_layout(layout, volumes)?;
            }
        }
        if let (Some(v), Some((part, at))) = (volumes, in_volume) {
            println!(
                "offset {offset}: volume part {part} {}, byte {at}",
                v.name(part)?
            );
        }
        return Ok(());
    }
    let path = path.unwrap_or_default();
    match tape.locate_path(path.as_bytes())? {
        Some(layout) if json => println!("{}", layout_json(&layout, volumes)?),
        Some(layout) => print_layout(&layout, volumes)?,
        None => {
            return Err(Error::Usage(format!(
                "{}: no such entry in the tape (paths start with the root name, see `tartape ls`)",
                path.to_string_lossy()
            )));
        }
    }
    Ok(())
}

/// `tartape volumes`: every volume with its window and the first and last entry it touches.
fn list_volumes(dir: &Path, catalog: Option<&Path>, args: &VolumeArgs, json: bool) -> Result<()> {
    let tape = Tape::open_with(dir, catalog)?;
    let Some(v) = VolumeNames::new(&tape, args)? else {
        return Err(Error::Usage(
            "tartape volumes needs --volume-size SIZE (e.g. 2G)".into(),
        ));
    };
    let offsets = tape.catalog().offsets();
    let entry_name = |offset: u64| -> Result<Option<String>> {
        match offsets.entry_at(offset) {
            Some(ordinal) => Ok(Some(tape.catalog().entry(ordinal)?.display_path())),
            None => Ok(None),
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let write_err = |e: io::Error| Error::io("<stdout>", e);
    for part in 1..=v.volumes.count() {
        let (start, end) = v.volumes.window_of(part)?;
        let name = v.name(part)?;
        let first = entry_name(start)?;
        let last = entry_name(end - 1)?;
        if json {
            let line = serde_json::json!({
                "part": part, "name": name, "start": start, "end": end, "size": end - start,
                "first_entry": first, "last_entry": last,
            });
            writeln!(out, "{line}")
        } else {
            let shown = |e: Option<String>| e.unwrap_or_else(|| "(footer)".into());
            writeln!(
                out,
                "{part:>w$} {name} {start:>14} {end:>14} {:>12} {} .. {}",
                end - start,
                shown(first),
                shown(last),
                w = v.volumes.pindex_width()
            )
        }
        .map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

/// `tartape restore`.
fn restore(args: RestoreArgs) -> Result<()> {
    let template = NameTemplate::parse(&args.volume_name)?;
    let paths: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    let bar = progress_shown().then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let request = tartape::restore::Restore {
        catalog: &args.catalog,
        from: &args.from,
        paths: &paths,
        dest: &args.dest,
        force: args.force,
        volume_size: args.volume_size,
        template,
    };
    let summary = request.run(|p| {
        if let Some(b) = &bar {
            match p {
                tartape::restore::Progress::Total(n) => b.set_length(n),
                tartape::restore::Progress::Entry(entry) => b.set_message(entry.display_path()),
                tartape::restore::Progress::Bytes(n) => b.inc(n),
            }
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = summary?;
    if !quiet() {
        println!("{summary}");
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn only_replies_the_kernel_gave_up_on_are_not_warnings() {
        let gave_up = |target: &str, message: std::fmt::Arguments<'_>| {
            kernel_gave_up(
                &log::Record::builder()
                    .level(log::Level::Error)
                    .target(target)
                    .args(message)
                    .build(),
            )
        };
        assert!(gave_up(
            "fuser::reply",
            format_args!("Failed to send FUSE reply: {}", "ENOENT")
        ));
        assert!(!gave_up(
            "fuser::reply",
            format_args!("Reply not sent for operation 7, replying with I/O error")
        ));
        assert!(!gave_up(
            "tartape::mount::fs",
            format_args!("Failed to send FUSE reply: {}", "ENOENT")
        ));
    }

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

    /// clap's own consistency checks, on every (deferred) subcommand; and each keeps the
    /// one-line description its variant gives in `tartape --help`.
    #[test]
    fn cli_is_consistent_and_subcommands_keep_their_descriptions() {
        let mut cli = Cli::command();
        let listed: Vec<(String, String)> = cli
            .get_subcommands()
            .map(|c| {
                (
                    c.get_name().to_string(),
                    c.get_about().map(|a| a.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        cli.build();
        cli.clone().debug_assert();
        for (name, about) in listed {
            let sub = cli.find_subcommand(&name).unwrap();
            let built = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert_eq!(
                built, about,
                "`tartape {name} --help` describes it differently"
            );
            assert!(!about.is_empty(), "{name} has no description");
        }
    }
}
