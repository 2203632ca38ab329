//! `tartape mount` and `tartape umount`: the command-line side of the mount.
//!
//! The library's [`tartape::mount`] serves a tape in the calling process. This module adds
//! what a user of `sshfs` expects around it: checks before anything is mounted, recording
//! a source that has no catalog yet, verification, and — unless `--foreground` — a
//! background process that serves the mount, logs to a file, and is only left behind once
//! the mounted file is readable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
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

/// How long `tartape mount` waits for the background process to serve the file.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How thoroughly the tape is checked against its source before mounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyChoice {
    /// Every directory and a sample of files.
    #[default]
    Quick,
    /// Every entry's metadata.
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
    /// Check the source before mounting (quick: every directory and a sample of files).
    #[arg(long, value_enum, default_value_t = VerifyChoice::Quick)]
    pub verify: VerifyChoice,
    /// Stay attached; Ctrl-C or SIGTERM unmounts.
    #[arg(short, long)]
    pub foreground: bool,
    /// Let other users read the mount (non-root: needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Threads serving requests.
    #[arg(long, value_name = "N", default_value_t = mount::DEFAULT_THREADS)]
    pub threads: usize,
    /// Bypass the page cache: every read goes to the tape (faster for one large
    /// sequential copy, slower for small reads, re-reads are not cached).
    #[arg(long)]
    pub direct_io: bool,
    /// Internal: set on the process that `tartape mount` re-executes to serve in the
    /// background: the parent already recorded and verified, and waits for the mount to
    /// be readable.
    #[arg(long, hide = true)]
    pub serve_child: bool,
}

/// `tartape mount SOURCE MOUNTPOINT`.
pub fn run_mount(args: MountArgs) -> Result<(), Error> {
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
    mount::check_fuse_available(args.allow_other)?;

    if !Tape::catalog_exists(&args.source, args.catalog.as_deref()) {
        let summary = TapeRecorder::new(&args.source)
            .catalog(args.catalog.clone())
            .commit()?;
        println!("{summary}");
    }
    let tape = Tape::open_with(&args.source, args.catalog.as_deref())?;
    if !args.serve_child {
        verify(&tape, &args)?;
    }

    if args.foreground {
        serve(tape, &mountpoint, &args)
    } else {
        // The tape is reopened by the serving process.
        let total_size = tape.total_size();
        drop(tape);
        spawn_background(&args, &mountpoint, total_size)
    }
}

/// `tartape umount MOUNTPOINT`.
pub fn run_umount(mountpoint: &Path) -> Result<(), Error> {
    mount::unmount(mountpoint)?;
    println!("unmounted {}", mountpoint.display());
    Ok(())
}

/// Refuses to mount a tape whose source no longer matches it, listing every discrepancy.
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
    let listed: Vec<String> = discrepancies.iter().map(ToString::to_string).collect();
    Err(Error::Mount(format!(
        "{}: the source no longer matches its tape ({} discrepanc{}), not mounting: {} \
         (record it again with `tartape record --force`)",
        args.source.display(),
        listed.len(),
        if listed.len() == 1 { "y" } else { "ies" },
        listed.join("; ")
    )))
}

fn mount_options(args: &MountArgs) -> MountOptions {
    MountOptions {
        name: args.name.clone(),
        allow_other: args.allow_other,
        threads: args.threads.max(1),
        cache: if args.direct_io {
            CacheMode::DirectIo
        } else {
            CacheMode::KeepCache
        },
        ..MountOptions::default()
    }
}

/// Serves in this process until unmounted (Ctrl-C, SIGTERM, `tartape umount`).
fn serve(tape: Tape, mountpoint: &Path, args: &MountArgs) -> Result<(), Error> {
    let total_size = tape.total_size();
    let session = mount::mount(tape, mountpoint, &mount_options(args))?;
    let file = mountpoint.join(&args.name);
    if args.serve_child {
        log::info!(
            "serving {} ({total_size} bytes) from {}",
            file.display(),
            args.source.display()
        );
    } else {
        println!(
            "mounted {} at {} ({total_size} bytes); Ctrl-C unmounts",
            args.source.display(),
            file.display()
        );
    }
    session.run()?;
    if !args.serve_child {
        println!("unmounted {}", args.mountpoint.display());
    }
    Ok(())
}

/// Re-executes this program as a detached process serving the mount, and returns once
/// the mounted file is readable (or with the process's last log lines if it failed).
fn spawn_background(args: &MountArgs, mountpoint: &Path, total_size: u64) -> Result<(), Error> {
    let exe = std::env::current_exe()
        .map_err(|err| Error::Mount(format!("cannot find the tartape executable: {err}")))?;
    let log_dir = log_dir();
    let log_path = log_dir.join(format!("tartape-mount-{}.log", std::process::id()));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|err| Error::io(&log_path, err))?;
    let log_err = log.try_clone().map_err(|err| Error::io(&log_path, err))?;

    let mut command = Command::new(&exe);
    command
        .args(child_args(args, mountpoint)?)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    // SAFETY: setsid is async-signal-safe and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|err| Error::Mount(format!("cannot start {}: {err}", exe.display())))?;
    // Name the log after the serving process; it keeps writing through its descriptors.
    let log_path = {
        let renamed = log_dir.join(format!("tartape-mount-{}.log", child.id()));
        if fs::rename(&log_path, &renamed).is_ok() {
            renamed
        } else {
            log_path
        }
    };

    let file = mountpoint.join(&args.name);
    if let Err(problem) = wait_until_readable(&mut child, mountpoint, &file) {
        let tail = log_tail(&log_path);
        return Err(Error::Mount(format!(
            "{}: mount failed: {problem}{}{} (log: {})",
            args.mountpoint.display(),
            if tail.is_empty() { "" } else { ": " },
            tail,
            log_path.display()
        )));
    }
    println!(
        "mounted {} at {} ({total_size} bytes)",
        args.source.display(),
        file.display()
    );
    println!("serving process: pid {}", child.id());
    println!("log: {}", log_path.display());
    println!("unmount with: tartape umount {}", args.mountpoint.display());
    Ok(())
}

/// The serving process's arguments: the same mount, absolute paths (it runs in `/`),
/// verification already done.
fn child_args(args: &MountArgs, mountpoint: &Path) -> Result<Vec<std::ffi::OsString>, Error> {
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
    out.push("none".into());
    out.push("--threads".into());
    out.push(args.threads.max(1).to_string().into());
    if args.allow_other {
        out.push("--allow-other".into());
    }
    if args.direct_io {
        out.push("--direct-io".into());
    }
    out.push("--foreground".into());
    out.push("--serve-child".into());
    Ok(out)
}

/// Polls until `mountpoint` is mounted and one byte of `file` reads, the child exits, or
/// the timeout passes (then the child is stopped and its mount removed).
fn wait_until_readable(child: &mut Child, mountpoint: &Path, file: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the serving process exited ({status})"));
        }
        if mount::is_mount_point(mountpoint).unwrap_or(false) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match read_one_byte(file, remaining) {
                Some(Ok(())) => return Ok(()),
                Some(Err(err)) => {
                    stop_child(child, mountpoint);
                    return Err(format!("{}: {err}", file.display()));
                }
                None => {
                    stop_child(child, mountpoint);
                    return Err(format!(
                        "{} was not readable within {} s",
                        file.display(),
                        READY_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        if Instant::now() >= deadline {
            stop_child(child, mountpoint);
            return Err(format!("not mounted within {} s", READY_TIMEOUT.as_secs()));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one byte of `file` in a helper thread, so that a hung mount cannot hang us:
/// `None` when it did not answer within `timeout`.
fn read_one_byte(file: &Path, timeout: Duration) -> Option<io::Result<()>> {
    let (sender, receiver) = mpsc::channel();
    let file = file.to_path_buf();
    thread::spawn(move || {
        let result = File::open(&file).and_then(|mut handle| {
            let mut byte = [0u8; 1];
            handle.read_exact(&mut byte)
        });
        let _ = sender.send(result);
    });
    receiver.recv_timeout(timeout).ok()
}

/// Stops a serving process that did not become ready, and removes what it mounted.
fn stop_child(child: &mut Child, mountpoint: &Path) {
    // SAFETY: signals a process we started and have not reaped, so its pid is ours.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
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

/// Where background logs go: `$XDG_RUNTIME_DIR` when usable, else the temp directory.
fn log_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The last lines of a log, joined on one line for an error message.
fn log_tail(path: &Path) -> String {
    const TAIL_BYTES: u64 = 2048;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
    let mut text = Vec::new();
    let _ = file.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join(" | ")
}
