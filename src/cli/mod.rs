//! The command line: what `tartape` accepts (`Cli`, `Command`), one file per group of
//! commands, and [`output`], the one place that writes to the terminal (progress bars,
//! `-q`, JSON, the one-line error, exit statuses).
//!
//! clap types stay in this folder: each command turns its arguments into calls on the
//! library (`tartape::…`), which knows nothing of the command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

pub mod inspect;
pub mod mount;
mod mount_logs;
pub mod output;
pub mod record;
pub mod restore;
pub mod serve;
pub mod shell;
pub mod stream;
pub mod upload;

use tartape::Result;
use tartape::volume::{NameTemplate, VolumeSet};

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
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print nothing on success: no progress bar, summary, listing or message (errors
    /// still go to standard error; the tape bytes `stream` writes are still written).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

// `--catalog PATH`, on every command that reads a tape. (A plain comment: a doc comment
// would replace the description of the subcommands that flatten it.)
#[derive(Args, Clone)]
pub struct CatalogArg {
    /// Catalog file to use instead of DIR/.tartape/index.db.
    #[arg(long, value_name = "PATH")]
    pub catalog: Option<PathBuf>,
}

impl CatalogArg {
    /// The catalog path given, if any.
    pub fn path(&self) -> Option<&Path> {
        self.catalog.as_deref()
    }
}

// How the tape is cut into volumes (SPEC §8). (A plain comment: a doc comment would
// replace the description of the subcommands that flatten it.)
#[derive(Args, Clone)]
pub struct VolumeArgs {
    /// Cut the tape into volumes of SIZE bytes: a multiple of 512, with an optional binary
    /// suffix (K = 1024, M, G, T). The last volume holds the rest.
    #[arg(long, value_name = "SIZE", value_parser = parse_volume_size)]
    pub volume_size: Option<u64>,
    /// Volume names: `{name}` (the root name), `{fingerprint}`, `{fingerprint:.N}` (its
    /// first N digits), `{index}` (k-1), `{part}` (k), `{pindex}` (k zero-padded to at
    /// least 3 digits), `{total}`.
    #[arg(long, value_name = "TEMPLATE", default_value = tartape::volume::DEFAULT_TEMPLATE, requires = "volume_size")]
    pub volume_name: String,
}

impl VolumeArgs {
    /// The tape's named volumes, when `--volume-size` was given.
    pub fn volume_set(&self, tape: &tartape::Tape) -> Result<Option<VolumeSet>> {
        let Some(size) = self.volume_size else {
            return Ok(None);
        };
        let template = NameTemplate::parse(&self.volume_name)?;
        Ok(Some(VolumeSet::new(tape.meta(), size, template)?))
    }
}

/// `--volume-size`: a positive multiple of 512, with a binary suffix.
pub fn parse_volume_size(text: &str) -> std::result::Result<u64, String> {
    tartape::volume::parse_volume_size(text).map_err(|e| e.to_string())
}

/// `--offset`: bytes, with an optional binary suffix (`1M` = 1048576).
pub fn parse_offset(text: &str) -> std::result::Result<u64, String> {
    tartape::volume::parse_size(text, "--offset").map_err(|e| e.to_string())
}

/// `--length`: bytes, with an optional binary suffix.
pub fn parse_length(text: &str) -> std::result::Result<u64, String> {
    tartape::volume::parse_size(text, "--length").map_err(|e| e.to_string())
}

#[derive(Subcommand)]
// Build only the arguments of the subcommand that runs: building all of them cost ~0.1 ms
// of every run, a twentieth of recording a tree of a few files.
#[command(defer = true)]
pub enum Command {
    /// Record DIR into a catalog (default DIR/.tartape/index.db).
    #[command(after_help = "Examples:\n  tartape record photos\n  \
tartape record photos --catalog /var/lib/tartape/photos.db --exclude '*.tmp' --hash sha256\n\n\
Exit status: 0 recorded, 1 failure (nothing is written: unreadable or unwritable entries \
are all listed), 2 usage error.")]
    Record(record::RecordArgs),
    /// Write the archive, or a byte range of it, to a file or pipe.
    #[command(
        after_help = "Examples:\n  tartape stream photos | ssh backup 'cat > photos.tar'\n  \
tartape stream photos --offset 1G --length 512M > part2\n  \
tartape stream photos -o photos.tar --continue\n\n\
Exit status: 0 written, 1 failure (a source that changed: what was written is a correct \
prefix), 2 usage error."
    )]
    Stream(stream::StreamArgs),
    /// Check that the source still matches the recording; lists every discrepancy.
    #[command(
        after_help = "Examples:\n  tartape verify photos\n  tartape verify photos --deep\n\n\
Exit status: 0 intact, 1 not intact (every discrepancy listed, added objects named), \
2 could not check (no catalog, unreadable catalog) or usage error."
    )]
    Verify(inspect::VerifyArgs),
    /// Show the tape's fingerprint, sizes, counts and recording options.
    #[command(
        after_help = "Examples:\n  tartape info photos\n  tartape info photos --json\n\n\
Exit status: 0 shown, 1 failure (no catalog), 2 usage error."
    )]
    Info(inspect::InfoArgs),
    /// List entries: start offset, end offset, kind, mode, size, archive path.
    #[command(
        after_help = "Examples:\n  tartape ls photos | grep jpg\n  tartape ls photos --json\n\n\
Exit status: 0 listed, 1 failure (no catalog), 2 usage error."
    )]
    Ls(inspect::LsArgs),
    /// Show where an entry lies in the tape, or what covers byte N.
    #[command(
        after_help = "Examples:\n  tartape locate photos photos/2024/a.jpg\n  \
tartape locate photos --offset 1G --json\n\n\
Exit status: 0 found, 1 failure (no such entry, offset past the end), 2 usage error."
    )]
    Locate(inspect::LocateArgs),
    /// List the volumes the tape is cut into: part, name, byte window, first and last entry.
    #[command(
        after_help = "With --volume K, lists the entries of volume K instead: each with its \
state there (complete, head, body or tail, as the Python tartape's manifests say) and the \
bytes of its content the volume holds.\n\nExamples:\n  tartape volumes photos --volume-size 2G\n  \
tartape volumes photos --volume-size 2G --volume 3 --json\n  \
tartape stream photos --volume-size 2G --volume 3 -o photos.tar.003\n\nExit status: 0 listed, \
1 failure (no catalog, a source that is not the recorded one), 2 usage error."
    )]
    Volumes(inspect::VolumesArgs),
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
    Restore(restore::RestoreArgs),
    /// Upload the tape (or its volumes) to S3-compatible storage; a run cut short resumes.
    #[command(
        after_help = "Configuration as aws-cli and rclone users have it: AWS_ACCESS_KEY_ID, \
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL(_S3), AWS_PROFILE and \
~/.aws/credentials, ~/.aws/config; --endpoint, --region and --profile override them. A custom \
endpoint is addressed path-style. Secrets are never printed.\n\nRun the same command again \
after a failure or a kill: only the parts the server lacks are sent (the state is kept beside \
the catalog, in uploads/). Ctrl-C keeps what was sent. An object already there with this \
tape's size and fingerprint is left as it is.\n\nExamples:\n  \
tartape upload photos s3://backups/photos.tar\n  \
tartape upload photos s3://backups/photos.tar --endpoint http://127.0.0.1:9000 --jobs 8\n  \
tartape upload photos s3://backups/photos/ --volume-size 4G     (volumes + catalog copy)\n  \
tartape upload photos s3://backups/photos.tar --abort\n  \
tartape restore photos/.tartape/index.db --from s3://backups/photos.tar photos/2024\n\n\
Exit status: 0 uploaded (or already there), 1 failure (the parts sent are kept: run it again), \
2 usage error, 130 interrupted (run it again to resume)."
    )]
    Upload(upload::UploadArgs),
    /// Serve tapes over HTTP, read-only, with Range, If-Range and ETag (any client resumes).
    #[command(
        after_help = "The first line printed is the server's URL, alone, even with -q (which \
prints nothing else): a script that asked for port 0 learns it there, e.g. `tartape serve \
photos --listen 127.0.0.1:0 > url.txt &` then `head -n 1 url.txt`.\n\nEach tape is /NAME.tar (NAME: its root name); with --volume-size, each \
volume and the catalog copy too. / lists them (HTML, or JSON with Accept: application/json). \
Every byte is checked against the recording: a source found changed cuts the download short \
and the tape then answers 409. Loopback only unless --listen says otherwise; beyond it, use \
--auth-file (and TLS in front, e.g. nginx or Caddy).\n\nExamples:\n  \
tartape serve photos\n  \
tartape serve photos music --listen 127.0.0.1:0\n  \
tartape serve photos --listen 0.0.0.0:8080 --auth-file ~/.config/tartape/users\n  \
curl -C - -O http://127.0.0.1:8080/photos.tar     (resumes a download cut short)\n  \
aria2c -x 8 -s 8 http://127.0.0.1:8080/photos.tar\n\n\
Exit status: 0 stopped by SIGINT or SIGTERM (responses in flight given 10 s), 1 failure (no \
catalog, the address is taken), 2 usage error."
    )]
    Serve(serve::ServeArgs),
    /// Mount the tape read-only (FUSE): one file, archive.tar, served from the source.
    #[command(after_help = "Examples:\n  tartape mount photos /mnt/tape\n  \
tartape mount photos /mnt/tape -o allow_other,verify=quick\n  \
mount -t fuse.tartape /srv/photos /mnt/tape -o allow_other     (through mount.fuse3)\n\n\
Exit status: 0 mounted (or, with -f, unmounted cleanly), 1 failure (nothing is left \
mounted), 2 usage error.")]
    Mount(mount::MountArgs),
    /// Unmount a tartape mount, also one whose serving process died.
    #[command(after_help = "Examples:\n  tartape umount /mnt/tape\n  \
tartape umount ~/mnt/photos     (also one whose serving process died: \"Transport endpoint \
is not connected\")\n  tartape mounts     (what is mounted where)\n\n\
Exit status: 0 unmounted, 1 failure (not mounted, busy, not the owner), 2 usage error.")]
    Umount(mount::UmountArgs),
    /// List the active tartape mounts: mount point, source, catalog, fingerprint, serving
    /// pid and log file.
    #[command(
        after_help = "Examples:\n  tartape mounts\n  tartape mounts --json\n\n\
Exit status: 0 listed (maybe none), 1 failure, 2 usage error."
    )]
    Mounts(mount::MountsArgs),
    /// Print a completion script for SHELL (e.g. `tartape completions bash >
    /// /etc/bash_completion.d/tartape`).
    #[command(
        after_help = "Examples:\n  tartape completions bash > /etc/bash_completion.d/tartape\n  \
tartape completions fish > ~/.config/fish/completions/tartape.fish\n\n\
Exit status: 0 printed, 2 usage error (an unknown shell)."
    )]
    Completions(shell::CompletionsArgs),
    /// Print the man page (roff; e.g. `tartape man > /usr/local/share/man/man1/tartape.1`).
    #[command(
        after_help = "Examples:\n  tartape man > /usr/local/share/man/man1/tartape.1\n  \
tartape man | man -l -\n\n\
Exit status: 0 printed, 1 failure (standard output closed)."
    )]
    Man,
}

/// A peer that hangs up makes a socket write fail with EPIPE, and `writev` raise SIGPIPE,
/// which `main` lets end the process (as `cat` ends when its reader goes): commands that
/// talk to the network ignore it, and see the error instead.
pub fn live_through_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe and sound at
    // any time; nothing in this process relies on SIGPIPE being delivered.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// mount(8)'s helper form (what `mount.fuse3` runs for type `fuse.tartape`): `tartape
/// SOURCE MOUNTPOINT -o OPTS` is `tartape mount SOURCE MOUNTPOINT -o OPTS`. Tried only
/// when the command line did not parse, its first word unknown and a path.
pub fn helper_form(error: clap::Error) -> std::result::Result<Cli, clap::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
