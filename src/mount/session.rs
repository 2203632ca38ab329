//! Mounting and serving: the mount (directly as root, through `fusermount3` for other
//! users), the serving loop, and a clean unmount on SIGINT, SIGTERM or SIGHUP.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use fuser::{Config, MountOption, Session, SessionACL};
use log::{error, info, warn};

use super::fs::TapeFs;
use super::system::{
    detach, dev_fuse_hint, find_fusermount, fusermount, is_root, mount_entry, raise_readahead,
    resolve_mountpoint,
};
use super::{MountOptions, one_line};
use crate::error::{Error, Result};
use crate::tape::Tape;

/// A tape mounted and ready to be served: the mount exists, requests queue in the kernel
/// until [`MountSession::run`] starts answering them.
///
/// From the moment [`mount`] is called until `run` returns, SIGINT, SIGTERM and SIGHUP
/// unmount the filesystem instead of ending the process, so that no signal can leave a
/// stale mount behind (one arriving before the mount exists unmounts it as soon as it
/// does).
pub struct MountSession {
    session: Session<TapeFs>,
    mountpoint: PathBuf,
    signals: signal_hook::iterator::Handle,
    watcher: thread::JoinHandle<()>,
    /// Unmounts a mount made through `fusermount3` if the session never runs.
    guard: Option<FusermountGuard>,
}

/// How a mount is taken down.
enum Unmounter {
    /// This process mounted it (root): umount(2).
    Kernel(PathBuf),
    /// `fusermount3` made it: `fusermount3 -u` takes it down.
    Fusermount(PathBuf),
}

impl Unmounter {
    fn unmount(&mut self) -> io::Result<()> {
        match self {
            Unmounter::Kernel(path) => {
                rustix::mount::unmount(path.as_path(), rustix::mount::UnmountFlags::empty())
                    .map_err(io::Error::from)
            }
            Unmounter::Fusermount(path) => fusermount(path, false),
        }
    }
}

/// Mounts `/dev/fuse` at `mountpoint` as root: read-only, type `fuse.tartape`, `source`
/// as the mount table's source (what `findmnt` and `df` show); returns the device.
fn kernel_mount(mountpoint: &Path, source: &str, allow_other: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::MountFlags;
    let device = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let root = rustix::fs::stat(mountpoint)?;
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions{}",
        std::os::fd::AsRawFd::as_raw_fd(&device),
        root.st_mode & libc::S_IFMT,
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
        if allow_other { ",allow_other" } else { "" }
    );
    rustix::mount::mount(
        source,
        mountpoint,
        "fuse.tartape",
        MountFlags::RDONLY | MountFlags::NOATIME | MountFlags::NODEV | MountFlags::NOSUID,
        std::ffi::CString::new(data)?.as_c_str(),
    )?;
    Ok(device)
}

/// Detaches a mount this process made (itself or through `fusermount3`) when dropped,
/// unless disarmed.
struct FusermountGuard(Option<PathBuf>);

impl FusermountGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for FusermountGuard {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fusermount(path, true);
        }
    }
}

/// The signals that unmount a served tape.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Mounts `tape` read-only at `mountpoint` (which should have passed
/// [`check_mountpoint`](super::check_mountpoint)) and returns once the kernel has
/// accepted the mount. Call [`MountSession::run`] to serve it.
///
/// As root the mount is made directly; any other user mounts through `fusermount3`
/// (setuid), which opens `/dev/fuse` and mounts on the user's behalf.
pub fn mount(tape: Tape, mountpoint: &Path, options: &MountOptions) -> Result<MountSession> {
    let mountpoint = resolve_mountpoint(mountpoint)?;
    // First of all: from here on a signal unmounts instead of killing the process.
    let mut signals = signal_hook::iterator::Signals::new(STOP_SIGNALS)
        .map_err(|err| Error::Mount(format!("cannot handle signals: {err}")))?;
    // The mount table names the canonical source directory, type `fuse.tartape`.
    let source = tape.root().to_string_lossy().into_owned();
    let fs = TapeFs::with_layout(tape, &options.name, &options.layout, options.cache)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
        MountOption::FSName(source.clone()),
        MountOption::Subtype("tartape".to_string()),
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    let cannot_mount = |err: io::Error| {
        Error::Mount(format!(
            "{}: cannot mount: {}",
            mountpoint.display(),
            one_line(&err.to_string())
        ))
    };
    let (session, unmounter, guard) = if is_root() {
        // Made here rather than by fuser, which gives every mount the type `fuse`.
        let device =
            kernel_mount(&mountpoint, &source, options.allow_other).map_err(cannot_mount)?;
        let guard = FusermountGuard(Some(mountpoint.clone()));
        let session = Session::from_fd(fs, device, config.acl, config).map_err(cannot_mount)?;
        (session, Unmounter::Kernel(mountpoint.clone()), Some(guard))
    } else {
        let device = fusermount_mount(&mountpoint, &config.mount_options, options.allow_other)
            .map_err(|err| {
                Error::Mount(format!("{}: cannot mount: {err}", mountpoint.display()))
            })?;
        let guard = FusermountGuard(Some(mountpoint.clone()));
        let session = Session::from_fd(fs, device, config.acl, config).map_err(cannot_mount)?;
        (
            session,
            Unmounter::Fusermount(mountpoint.clone()),
            Some(guard),
        )
    };
    info!(
        "mounted at {} ({} threads, {:?})",
        mountpoint.display(),
        options.threads.max(1),
        options.cache
    );
    let handle = signals.handle();
    let watcher = {
        let mountpoint = mountpoint.clone();
        let mut unmounter = unmounter;
        thread::Builder::new()
            .name("tartape-signals".to_string())
            // Runs until `run` closes the handle (the iterator must outlive that: closing
            // writes to it).
            .spawn(move || {
                for signal in signals.forever() {
                    info!("signal {signal}: unmounting {}", mountpoint.display());
                    unmount_on_signal(&mut unmounter, &mountpoint);
                }
            })
            .map_err(|err| Error::Mount(format!("cannot start the signal watcher: {err}")))?
    };
    // mountinfo, unlike a stat of the mount point, asks nothing of the not yet serving
    // filesystem.
    match mount_entry(&mountpoint) {
        Some(entry) => {
            if let Some(readahead_kb) = options.readahead_kb {
                raise_readahead(&entry, readahead_kb);
            }
        }
        None => warn!(
            "{}: mounted but not listed in mountinfo",
            mountpoint.display()
        ),
    }
    Ok(MountSession {
        session,
        mountpoint,
        signals: handle,
        watcher,
        guard,
    })
}

impl MountSession {
    /// The canonical mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Serves requests until the filesystem is unmounted — by `tartape umount`, by
    /// `fusermount3 -u`, or by SIGINT, SIGTERM or SIGHUP, which unmount it cleanly.
    pub fn run(self) -> Result<()> {
        let MountSession {
            session,
            mountpoint,
            signals,
            watcher,
            guard,
        } = self;
        let result = session.run();
        // The mount is gone: nothing is left for the guard to detach.
        if let Some(guard) = guard {
            guard.disarm();
        }
        signals.close();
        let _ = watcher.join();
        info!("unmounted {}", mountpoint.display());
        result.map_err(|err| {
            Error::Mount(format!(
                "{}: serving the mount failed: {}",
                mountpoint.display(),
                one_line(&err.to_string())
            ))
        })
    }
}

/// Mounts `tape` at `mountpoint` and serves it in the calling thread until it is
/// unmounted; see [`mount`] and [`MountSession::run`].
pub fn mount_foreground(tape: Tape, mountpoint: &Path, options: &MountOptions) -> Result<()> {
    mount(tape, mountpoint, options)?.run()
}

/// Unmounts after a signal; a busy mount (a process still has the file open) is detached
/// so that it disappears now, its open files served until they are closed.
fn unmount_on_signal(unmounter: &mut Unmounter, mountpoint: &Path) {
    if let Err(err) = unmounter.unmount() {
        warn!(
            "unmounting {}: {err}; detaching it lazily (open files are served until closed)",
            mountpoint.display()
        );
        if let Err(err) = detach(mountpoint) {
            error!("{err}");
        }
    }
}

/// Mounts through `fusermount3`, which opens `/dev/fuse`, mounts it at `mountpoint`
/// and hands the open device back over a socket (`_FUSE_COMMFD`), as libfuse does.
fn fusermount_mount(
    mountpoint: &Path,
    options: &[MountOption],
    allow_other: bool,
) -> std::result::Result<OwnedFd, String> {
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    let program = find_fusermount().ok_or_else(|| {
        "fusermount3 is not installed, and only root may mount without it (install the \
         fuse3 package)"
            .to_string()
    })?;
    let mut opts: Vec<String> = options.iter().map(fusermount_option).collect();
    if allow_other {
        opts.push("allow_other".to_string());
    }
    let (ours, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
    let theirs_fd = theirs.as_raw_fd();
    let mut command = Command::new(&program);
    command
        .arg("-o")
        .arg(opts.join(","))
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure only clears FD_CLOEXEC of a descriptor this process owns (the
    // child inherits it), with one fcntl: async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let fd = std::os::fd::BorrowedFd::borrow_raw(theirs_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    drop(theirs);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = rustix::net::recvmsg(
        &ours,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    );
    let device = received.ok().and_then(|_| {
        control.drain().find_map(|message| match message {
            rustix::net::RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
    });
    drop(ours);
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    match device {
        Some(device) => Ok(device),
        None => {
            let said = one_line(&String::from_utf8_lossy(&output.stderr));
            Err(if said.contains("/dev/fuse") {
                format!("{said} ({})", dev_fuse_hint())
            } else if said.contains("user_allow_other") {
                format!(
                    "{said} (--allow-other needs the line `user_allow_other` in /etc/fuse.conf \
                     for a user who is not root)"
                )
            } else if said.is_empty() {
                format!("{} failed ({})", program.display(), output.status)
            } else {
                said
            })
        }
    }
}

/// A mount option as `fusermount3 -o` spells it.
fn fusermount_option(option: &MountOption) -> String {
    match option {
        MountOption::RO => "ro".into(),
        MountOption::NoAtime => "noatime".into(),
        MountOption::NoDev => "nodev".into(),
        MountOption::NoSuid => "nosuid".into(),
        MountOption::DefaultPermissions => "default_permissions".into(),
        // fusermount3 splits options at commas and takes `\` as an escape.
        MountOption::FSName(name) => {
            format!("fsname={}", name.replace('\\', "\\\\").replace(',', "\\,"))
        }
        MountOption::Subtype(name) => format!("subtype={name}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
