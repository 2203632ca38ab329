//! `tartape mount`, `tartape umount` and `tartape mounts`: the command-line side of the
//! mount.
//!
//! The library's [`tartape::mount`] serves a tape in the calling process. This module adds
//! what a user of `sshfs` expects around it: checks before anything is mounted, recording
//! a source that has no catalog yet, verification, and — unless `--foreground` — a
//! background process that serves the mount, logs to a file, and is only left behind once
//! the mounted file is readable.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tartape::Error;
use tartape::mount::{self, CacheMode, MountOptions};
use tartape::record::TapeRecorder;
use tartape::tape::{Tape, VerifyLevel};

use super::mount_logs::{MountLog, log_tail, remove_own_log};
use super::output::{self, Exit, Out};

/// How long `tartape mount` waits for the background process to serve the file.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How thoroughly the tape is checked against its source before mounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyChoice {
    /// Every directory and a sample of files.
    Quick,
    /// Every entry's metadata, and objects added since recording.
    #[default]
    Full,
    /// No check before mounting (reads of changed files still fail with EIO).
    None,
}

// What `tartape mount` was asked to do. (A plain comment: a doc comment here would replace
// the `mount` variant's in `tartape mount --help`, its subcommand being built deferred.)
#[derive(Clone, Debug, clap::Args)]
pub struct MountArgs {
    /// Directory whose tape to serve (recorded first when it has no catalog).
    pub source: PathBuf,
    /// Empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Catalog file to use instead of SOURCE/.tartape/index.db.
    #[arg(long, value_name = "PATH")]
    pub catalog: Option<PathBuf>,
    /// Name of the file in the mount.
    #[arg(long, value_name = "NAME", default_value = mount::DEFAULT_NAME)]
    pub name: String,
    /// Check the source before mounting (full: every entry; quick: every directory and a
    /// sample of files; none: only the root).
    #[arg(long, value_enum, default_value_t = VerifyChoice::Full)]
    pub verify: VerifyChoice,
    /// Stay attached; Ctrl-C or SIGTERM unmounts.
    #[arg(short, long)]
    pub foreground: bool,
    /// Let other users read the mount (non-root: needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Threads serving requests.
    #[arg(long, value_name = "N", default_value_t = mount::DEFAULT_THREADS,
          value_parser = clap::builder::TypedValueParser::map(
              clap::value_parser!(u16).range(1..), usize::from))]
    pub threads: usize,
    /// Hold the tape's volumes of SIZE bytes (a multiple of 512; K, M, G, T suffixes)
    /// instead of one archive.tar, plus the read-only catalog copy `<name>_<fp8>.tartape`
    /// that `tartape restore` needs: uploading the mount's content uploads everything.
    #[arg(long, value_name = "SIZE", value_parser = super::parse_volume_size)]
    pub volume_size: Option<u64>,
    /// Volume names (see `tartape volumes --help`).
    #[arg(long, value_name = "TEMPLATE", default_value = tartape::volume::DEFAULT_TEMPLATE,
          requires = "volume_size")]
    pub volume_name: String,
    /// Bypass the page cache: every read goes to the tape (faster for one large
    /// sequential copy, slower for small reads, re-reads are not cached).
    #[arg(long)]
    pub direct_io: bool,
    /// Mount options, sshfs-style (comma-separated, repeatable): allow_other, direct_io,
    /// catalog=PATH, verify=quick|full|none, name=NAME, volume_size=SIZE, threads=N,
    /// log=FILE, debug; and mount(8)'s generic ones (ro, rw, nodev, dev, nosuid, suid,
    /// noexec, noatime, auto, noauto, user, users, nofail, _netdev, defaults, x-*), which
    /// change nothing: the mount is always read-only.
    #[arg(short = 'o', value_name = "OPT[,OPT...]", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Log file of the background process (default: one in $XDG_STATE_HOME/tartape/).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Set by `-o debug`: the serving process logs at debug level.
    #[arg(skip)]
    pub debug: bool,
    /// Internal: set on the process that `tartape mount` re-executes to serve in the
    /// background: the parent already recorded; this process checks, mounts and serves.
    #[arg(long, hide = true)]
    pub serve_child: bool,
    /// Internal: the descriptor on which the serving process tells its parent how
    /// starting went (`mounting`, then `ok` or `error: …`).
    #[arg(long, hide = true, value_name = "FD")]
    pub ready_fd: Option<i32>,
    /// Internal: the serving process's standard error is a log file `tartape mount`
    /// created, to be removed when the mount ends without a warning.
    #[arg(long, hide = true)]
    pub own_log: bool,
}

// What `tartape umount` was asked to do.
#[derive(Clone, Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point.
    mountpoint: PathBuf,
}

// What `tartape mounts` was asked to do.
#[derive(Clone, Debug, clap::Args)]
pub struct MountsArgs {
    /// One JSON object per line (keys mountpoint, source, catalog, fingerprint, pid, log).
    #[arg(long)]
    json: bool,
}

/// Applies `-o` options to the arguments they stand for (SPEC §5); an unknown one is
/// an error naming it.
fn apply_options(args: &mut MountArgs) -> Result<(), Error> {
    let options: Vec<String> = args
        .options
        .iter()
        .flat_map(|list| list.split(','))
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    for option in options {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option.as_str(), None),
        };
        let value_of =
            || value.ok_or_else(|| Error::Usage(format!("-o {key}: needs a value ({key}=…)")));
        let bad = |why: String| Error::Usage(format!("-o {option}: {why}"));
        match key {
            "allow_other" => args.allow_other = true,
            "direct_io" => args.direct_io = true,
            "debug" => args.debug = true,
            "catalog" => args.catalog = Some(PathBuf::from(value_of()?)),
            "log" => args.log = Some(PathBuf::from(value_of()?)),
            "name" => args.name = value_of()?.to_string(),
            "verify" => {
                args.verify = <VerifyChoice as clap::ValueEnum>::from_str(value_of()?, false)
                    .map_err(|_| bad("verify is quick, full or none".into()))?;
            }
            "threads" => {
                args.threads = value_of()?
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(usize::from)
                    .ok_or_else(|| bad("threads is a number from 1 to 65535".into()))?;
            }
            "volume_size" => {
                args.volume_size = Some(tartape::volume::parse_volume_size(value_of()?)?);
            }
            // mount(8)'s and mount.fuse3's own: nothing to do (always read-only, nodev,
            // nosuid; fstab's scheduling options are for mount(8) and systemd).
            "ro" | "rw" | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime"
            | "noatime" | "auto" | "noauto" | "user" | "nouser" | "users" | "nofail"
            | "_netdev" | "defaults" | "async" | "sync" => {}
            _ if key.starts_with("x-") => {}
            _ => {
                return Err(Error::Usage(format!(
                    "-o {option}: unknown mount option (known: allow_other, direct_io, \
                     catalog=, verify=, name=, volume_size=, threads=, log=, debug)"
                )));
            }
        }
    }
    Ok(())
}

/// `tartape mount SOURCE MOUNTPOINT`.
pub fn run(args: MountArgs) -> Result<Exit, Error> {
    run_mount(args).map(|()| Exit::Success)
}

fn run_mount(mut args: MountArgs) -> Result<(), Error> {
    apply_options(&mut args)?;
    let source = tartape::source::canonical_source(&args.source)?;
    let mountpoint = mount::check_mountpoint(&args.mountpoint)?;
    if mountpoint.starts_with(&source) {
        // The mount would become part of what it serves, and moves its parent's mtime.
        return Err(Error::Mount(format!(
            "{}: the mount point is inside the source {}; mount it elsewhere",
            args.mountpoint.display(),
            source.display()
        )));
    }
    mount::validate_name(&args.name)?;
    tartape::volume::NameTemplate::parse(&args.volume_name)?;
    mount::check_fuse_available(args.allow_other)?;

    if !args.serve_child && !Tape::catalog_exists(&args.source, args.catalog.as_deref()) {
        let recorder = TapeRecorder::new(&args.source).catalog(args.catalog.clone());
        let summary = super::record::record_with_progress(recorder)?;
        Out::stdout().line(&summary)?;
    }
    if !args.foreground {
        return spawn_background(&args, &mountpoint);
    }
    let mut ready = match args.ready_fd {
        None => None,
        // Only the pipe `spawn_background` passes: never one of the standard streams.
        Some(fd) if fd > 2 && args.serve_child && is_pipe(fd) => {
            // SAFETY: the parent opened this pipe for this process alone, and nothing
            // else in this process owns or closes it.
            Some(File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
        }
        Some(fd) => {
            return Err(Error::Usage(format!(
                "--ready-fd {fd}: not a pipe from `tartape mount`"
            )));
        }
    };
    let started = check_and_mount(&args, &mountpoint, ready.as_mut());
    let (session, total_size) = match started {
        Ok(started) => started,
        Err(err) => {
            if let Some(ready) = ready.as_mut() {
                let _ = writeln!(ready, "error: {err}");
            }
            return Err(err);
        }
    };
    match ready.take() {
        Some(mut ready) => {
            let _ = writeln!(ready, "ok {total_size}");
            log::info!(
                "serving {} at {}",
                args.source.display(),
                mountpoint.display()
            );
        }
        None if args.volume_size.is_some() => Out::stdout().line(format_args!(
            "mounted {} at {} ({total_size} bytes in volumes); Ctrl-C unmounts",
            args.source.display(),
            mountpoint.display(),
        ))?,
        None => Out::stdout().line(format_args!(
            "mounted {} at {} ({total_size} bytes); Ctrl-C unmounts",
            args.source.display(),
            mountpoint.join(&args.name).display()
        ))?,
    }
    session.run()?;
    if !args.serve_child {
        Out::stdout().line(format_args!("unmounted {}", args.mountpoint.display()))?;
    } else if args.own_log && !output::warned() {
        remove_own_log();
    }
    Ok(())
}

/// Whether `fd` is an open descriptor of a pipe (asked of /proc, which needs no
/// borrow of a descriptor that may not be open).
fn is_pipe(fd: i32) -> bool {
    fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.as_os_str().as_encoded_bytes().starts_with(b"pipe:"))
}

/// Opens the tape, checks it against its source and mounts it: all in the process that
/// serves, so that what is served is what was checked. Returns the session and the tape's
/// size.
fn check_and_mount(
    args: &MountArgs,
    mountpoint: &Path,
    ready: Option<&mut File>,
) -> Result<(mount::MountSession, u64), Error> {
    let tape = Tape::open_with(&args.source, args.catalog.as_deref())?;
    let total_size = tape.total_size();
    let options = mount_options(args)?;
    // Whatever --verify says, the root entry is checked before any byte is served.
    tape.check_root()?;
    verify(&tape, args)?;
    if let Some(ready) = ready {
        let _ = writeln!(ready, "mounting");
    }
    Ok((mount::mount(tape, mountpoint, &options)?, total_size))
}

/// `tartape umount MOUNTPOINT`.
pub fn umount(args: UmountArgs) -> Result<Exit, Error> {
    mount::unmount(&args.mountpoint)?;
    Out::stdout().line(format_args!("unmounted {}", args.mountpoint.display()))?;
    Ok(Exit::Success)
}

/// `tartape mounts`: every tartape mount of the mount table, with what its serving
/// process says of it (found by its command line; its log is its standard error).
pub fn mounts(args: MountsArgs) -> Result<Exit, Error> {
    let json = args.json;
    let mut out = Out::stdout();
    for (mountpoint, source) in mount::tartape_mounts() {
        let server = serving_process(&mountpoint);
        let catalog = server
            .as_ref()
            .and_then(|s| s.catalog.clone())
            .unwrap_or_else(|| tartape::source::default_catalog(&source));
        let fingerprint = tartape::catalog::Catalog::open(&catalog)
            .ok()
            .map(|c| c.meta().fingerprint.clone());
        let pid = server.as_ref().map(|s| s.pid);
        let log = server.and_then(|s| s.log);
        let line = if json {
            serde_json::json!({
                "mountpoint": mountpoint.to_string_lossy(),
                "source": source.to_string_lossy(),
                "catalog": catalog.to_string_lossy(),
                "fingerprint": fingerprint,
                "pid": pid,
                "log": log.as_ref().map(|l| l.to_string_lossy()),
            })
            .to_string()
        } else {
            format!(
                "{} from {} (catalog {}, fingerprint {}, pid {}, log {})",
                mountpoint.display(),
                source.display(),
                catalog.display(),
                fingerprint.as_deref().unwrap_or("?"),
                pid.map_or("?".to_string(), |p| p.to_string()),
                log.as_ref()
                    .map_or("none".into(), |l| l.display().to_string()),
            )
        };
        out.line(line)?;
    }
    out.flush()?;
    Ok(Exit::Success)
}

/// What `tartape mounts` learns of the process serving a mount.
struct Server {
    pid: u32,
    catalog: Option<PathBuf>,
    log: Option<PathBuf>,
}

/// The `tartape mount … MOUNTPOINT …` process serving `mountpoint`, if this user may see
/// it: its pid, its `--catalog`, and its log (its standard error, when a file).
fn serving_process(mountpoint: &Path) -> Option<Server> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<OsString> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(a).to_owned())
            .collect();
        if !args.iter().any(|a| a == "mount") || pid == std::process::id() {
            continue;
        }
        let cwd = fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let absolute = |a: &OsString| cwd.join(a);
        if !args.iter().skip(1).any(|a| absolute(a) == mountpoint) {
            continue;
        }
        let catalog = args
            .iter()
            .position(|a| a == "--catalog")
            .and_then(|i| args.get(i + 1))
            .map(absolute);
        let log = fs::read_link(entry.path().join("fd/2"))
            .ok()
            .filter(|l| l.is_absolute() && l.is_file() && !l.starts_with("/dev"));
        return Some(Server { pid, catalog, log });
    }
    None
}

/// Refuses to mount a tape whose source no longer matches it, with every discrepancy.
fn verify(tape: &Tape, args: &MountArgs) -> Result<(), Error> {
    let level = match args.verify {
        VerifyChoice::Quick => VerifyLevel::Quick,
        VerifyChoice::Full => VerifyLevel::Full,
        VerifyChoice::None => return Ok(()),
    };
    let discrepancies = tape.verify(level)?;
    if discrepancies.is_empty() {
        return Ok(());
    }
    Err(Error::Changed {
        source: args.source.clone(),
        discrepancies,
    })
}

fn mount_options(args: &MountArgs) -> Result<MountOptions, Error> {
    let layout = match args.volume_size {
        None => mount::Layout::Single,
        Some(size) => mount::Layout::Volumes {
            size,
            template: tartape::volume::NameTemplate::parse(&args.volume_name)?,
        },
    };
    Ok(MountOptions {
        name: args.name.clone(),
        layout,
        allow_other: args.allow_other,
        threads: args.threads.max(1),
        cache: if args.direct_io {
            CacheMode::DirectIo
        } else {
            CacheMode::KeepCache
        },
        ..MountOptions::default()
    })
}

/// Re-executes this program as a detached process that checks, mounts and serves the
/// tape, and returns once the mounted file is readable. The serving process tells how
/// starting went through a pipe (`mounting`, then `ok SIZE` or `error: …`); when it
/// fails, its one-line error is this process's.
fn spawn_background(args: &MountArgs, mountpoint: &Path) -> Result<(), Error> {
    let exe = std::env::current_exe()
        .map_err(|err| Error::Mount(format!("cannot find the tartape executable: {err}")))?;
    let (mut log, fallback) = MountLog::create(
        args.log.as_deref(),
        &format!("mount-{}", std::process::id()),
    )?;
    if let Some(why) = fallback {
        output::warn(why);
    }
    let (stdout, stderr) = match log.file() {
        Some(file) => {
            let clone = |f: &File| {
                f.try_clone()
                    .map(Stdio::from)
                    .map_err(|err| Error::io(log.path().unwrap_or_default(), err))
            };
            (clone(file)?, clone(file)?)
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|err| Error::Mount(format!("cannot create a pipe: {}", io::Error::from(err))))?;
    let ready_fd = ready_write.as_raw_fd();

    let mut command = Command::new(&exe);
    command
        .args(child_args(args, mountpoint, ready_fd, log.is_ours())?)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if args.debug {
        command.env("RUST_LOG", "debug");
    } else if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    // SAFETY: setsid and one fcntl on a descriptor this process owns are
    // async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            rustix::process::setsid()?;
            let fd = std::os::fd::BorrowedFd::borrow_raw(ready_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|err| Error::Mount(format!("cannot start {}: {err}", exe.display())))?;
    drop(ready_write);
    // Name the log after the serving process; it keeps writing through its descriptors.
    let log_path = log.rename(&format!("mount-{}.log", child.id()));

    let (total_size, first) = match wait_until_ready(File::from(ready_read), &mut child, mountpoint)
    {
        Ok(ready) => ready,
        Err(Failure::Said(message)) => {
            // Its one line says it all: the log would only repeat it (one of ours).
            log.remove();
            return Err(Error::Mount(message));
        }
        Err(Failure::Other(problem)) => {
            let tail = log_path.as_deref().map(log_tail).unwrap_or_default();
            let place = match &log_path {
                Some(path) => format!("log: {}", path.display()),
                None => "no log file".to_string(),
            };
            return Err(Error::Mount(format!(
                "{}: mount failed: {problem}{}{} ({place})",
                args.mountpoint.display(),
                if tail.is_empty() { "" } else { ": " },
                tail,
            )));
        }
    };
    let mut out = Out::stdout();
    if args.volume_size.is_some() {
        out.line(format_args!(
            "mounted {} at {} ({total_size} bytes in volumes from {})",
            args.source.display(),
            mountpoint.display(),
            first.to_string_lossy()
        ))?;
    } else {
        out.line(format_args!(
            "mounted {} at {} ({total_size} bytes)",
            args.source.display(),
            mountpoint.join(&first).display()
        ))?;
    }
    out.line(format_args!("serving process: pid {}", child.id()))?;
    match (&log_path, log.wanted()) {
        (Some(path), _) => out.line(format_args!("log: {}", path.display()))?,
        (None, Some(wanted)) => out.line(format_args!(
            "log: none ({} could not be used; see the warning above)",
            wanted.display()
        ))?,
        (None, None) => out.line("log: none")?,
    }
    out.line(format_args!(
        "unmount with: tartape umount {}",
        args.mountpoint.display()
    ))?;
    Ok(())
}

/// The serving process's arguments: the same mount, absolute paths (it runs in `/`).
fn child_args(
    args: &MountArgs,
    mountpoint: &Path,
    ready_fd: i32,
    own_log: bool,
) -> Result<Vec<std::ffi::OsString>, Error> {
    let absolute = |path: &Path| std::path::absolute(path).map_err(|err| Error::io(path, err));
    let mut out: Vec<std::ffi::OsString> = vec!["mount".into()];
    out.push(absolute(&args.source)?.into());
    out.push(mountpoint.into());
    if let Some(catalog) = &args.catalog {
        out.push("--catalog".into());
        out.push(absolute(catalog)?.into());
    }
    out.push("--name".into());
    out.push(args.name.clone().into());
    out.push("--verify".into());
    out.push(
        match args.verify {
            VerifyChoice::Quick => "quick",
            VerifyChoice::Full => "full",
            VerifyChoice::None => "none",
        }
        .into(),
    );
    out.push("--threads".into());
    out.push(args.threads.to_string().into());
    if args.allow_other {
        out.push("--allow-other".into());
    }
    if args.direct_io {
        out.push("--direct-io".into());
    }
    if let Some(size) = args.volume_size {
        out.push("--volume-size".into());
        out.push(size.to_string().into());
        out.push("--volume-name".into());
        out.push(args.volume_name.clone().into());
    }
    out.push("--foreground".into());
    out.push("--serve-child".into());
    out.push("--ready-fd".into());
    out.push(ready_fd.to_string().into());
    if own_log {
        out.push("--own-log".into());
    }
    Ok(out)
}

/// Why a background mount did not come up.
enum Failure {
    /// The serving process's own one-line error.
    Said(String),
    /// Something else (it died, it hung); its log tells more.
    Other(String),
}

/// Waits for the serving process's word on the pipe: however long checking the tape
/// takes, then at most [`READY_TIMEOUT`] for the mount itself and for one byte of
/// the first file of the mount to be readable. On success, the tape's size and that
/// file's name. A process that fails is stopped and its mount, if any, removed.
fn wait_until_ready(
    ready: File,
    child: &mut Child,
    mountpoint: &Path,
) -> Result<(u64, OsString), Failure> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in io::BufRead::lines(io::BufReader::new(ready)) {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut deadline: Option<Instant> = None;
    let outcome = loop {
        let line = match deadline {
            None => receiver
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(d) => receiver.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match line {
            Ok(line) if line == "mounting" => deadline = Some(Instant::now() + READY_TIMEOUT),
            Ok(line) if line.starts_with("ok ") => {
                break line[3..]
                    .parse::<u64>()
                    .map_err(|_| Failure::Other(format!("the serving process said {line:?}")));
            }
            Ok(line) => {
                let message = line.strip_prefix("error: ").unwrap_or(&line).to_string();
                // It exits by itself after saying so.
                let _ = child.wait();
                return Err(Failure::Said(message));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                break Err(Failure::Other(format!(
                    "the serving process exited ({status})"
                )));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(Failure::Other(format!(
                    "not mounted within {} s",
                    READY_TIMEOUT.as_secs()
                )));
            }
        }
    };
    let outcome = outcome.and_then(|size| match read_one_byte(mountpoint, READY_TIMEOUT) {
        Some(Ok(first)) => Ok((size, first)),
        Some(Err(err)) => Err(Failure::Other(format!("{}: {err}", mountpoint.display()))),
        None => Err(Failure::Other(format!(
            "{}: no file was readable within {} s",
            mountpoint.display(),
            READY_TIMEOUT.as_secs()
        ))),
    });
    if outcome.is_err() {
        stop_child(child, mountpoint);
    }
    outcome
}

/// Reads one byte of the first file the mount lists in a helper thread, so that a hung
/// mount cannot hang us: its name, or `None` when it did not answer within `timeout`.
fn read_one_byte(mountpoint: &Path, timeout: Duration) -> Option<io::Result<OsString>> {
    let (sender, receiver) = mpsc::channel();
    let mountpoint = mountpoint.to_path_buf();
    thread::spawn(move || {
        // The first file the mount lists: archive.tar, or the first volume.
        let result = fs::read_dir(&mountpoint).and_then(|mut listing| {
            let first = listing
                .next()
                .ok_or_else(|| io::Error::other("the mount lists no file"))??;
            let mut handle = File::open(first.path())?;
            let mut byte = [0u8; 1];
            handle.read_exact(&mut byte)?;
            Ok(first.file_name())
        });
        let _ = sender.send(result);
    });
    receiver.recv_timeout(timeout).ok()
}

/// Stops a serving process that did not become ready, and removes what it mounted.
fn stop_child(child: &mut Child, mountpoint: &Path) {
    // A process we started and have not reaped: its pid is still ours.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::TERM,
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    if mount::is_mount_point(mountpoint).unwrap_or(false) {
        let _ = mount::unmount(mountpoint);
    }
}
