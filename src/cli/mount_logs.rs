//! Where a background mount logs (SPEC §5): `--log FILE`, or one file per mount in a
//! log directory of this user's. The directory never decides whether a mount works: when
//! `$XDG_STATE_HOME/tartape` (by default `~/.local/state/tartape`) cannot be used — a
//! system user's home is often `/nonexistent`, or still root's after `setpriv` or
//! `runuser` — the log goes to `$XDG_RUNTIME_DIR/tartape`, then to a private directory
//! under the system's temporary directory, and failing all of them the mount goes ahead
//! without a log file, saying once where the log would have gone.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use tartape::Error;

/// Logs of background mounts kept, at most (the newest).
const KEPT_LOGS: usize = 20;

/// Where the log of a background mount goes.
pub enum MountLog {
    /// A file in a log directory of ours (removed when the mount ends without a warning).
    Ours {
        dir: LogDir,
        name: String,
        file: File,
    },
    /// The file the user chose with `--log` (kept).
    Chosen { path: PathBuf, file: File },
    /// No log file: no log directory could be used. `tried` says where and why not.
    Nowhere { tried: Vec<(PathBuf, String)> },
}

impl MountLog {
    /// The log of a mount about to start, named after `stem`: the file `chosen`, or one in
    /// the first log directory that works. `Err` only when `chosen` cannot be opened.
    /// The second value tells why the default directory was not used, if it was not.
    pub fn create(chosen: Option<&Path>, stem: &str) -> Result<(MountLog, Option<String>), Error> {
        if let Some(path) = chosen {
            let file = open_chosen_log(path)?;
            return Ok((
                MountLog::Chosen {
                    path: path.to_path_buf(),
                    file,
                },
                None,
            ));
        }
        let mut tried = Vec::new();
        for (candidate, create_parents) in log_dir_candidates() {
            let made = LogDir::open(&candidate, create_parents)
                .and_then(|dir| dir.create(stem).map(|(file, name)| (dir, file, name)));
            match made {
                Ok((dir, file, name)) => {
                    let why = (!tried.is_empty()).then(|| {
                        format!(
                            "cannot keep logs in {}; this mount logs to {} (choose with \
                             --log FILE or XDG_STATE_HOME)",
                            reasons(&tried),
                            dir.path.display()
                        )
                    });
                    return Ok((MountLog::Ours { dir, name, file }, why));
                }
                Err(why) => tried.push((candidate, why)),
            }
        }
        let why = format!(
            "this mount has no log file: cannot keep logs in {} (choose one with --log FILE \
             or XDG_STATE_HOME)",
            reasons(&tried)
        );
        Ok((MountLog::Nowhere { tried }, Some(why)))
    }

    /// The path of the log file, if there is one.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            MountLog::Ours { dir, name, .. } => Some(dir.path.join(name)),
            MountLog::Chosen { path, .. } => Some(path.clone()),
            MountLog::Nowhere { .. } => None,
        }
    }

    /// Where the log would have gone (the default directory), for messages.
    pub fn wanted(&self) -> Option<&Path> {
        match self {
            MountLog::Nowhere { tried } => tried.first().map(|(p, _)| p.as_path()),
            _ => None,
        }
    }

    /// The open log file, for the serving process's standard output and error.
    pub fn file(&self) -> Option<&File> {
        match self {
            MountLog::Ours { file, .. } | MountLog::Chosen { file, .. } => Some(file),
            MountLog::Nowhere { .. } => None,
        }
    }

    /// Renames a log of ours to `to` (named after the serving process) unless a file has
    /// that name; its path, either way.
    pub fn rename(&mut self, to: &str) -> Option<PathBuf> {
        if let MountLog::Ours { dir, name, .. } = self
            && dir.rename(name, to)
        {
            *name = to.to_string();
        }
        self.path()
    }

    /// Removes a log of ours (a mount that failed said all there is to say in its one
    /// line).
    pub fn remove(&self) {
        if let MountLog::Ours { dir, name, .. } = self {
            let _ = rustix::fs::unlinkat(&dir.fd, name.as_str(), rustix::fs::AtFlags::empty());
        }
    }

    /// Whether the serving process's log is ours to remove when it ends cleanly.
    pub fn is_ours(&self) -> bool {
        matches!(self, MountLog::Ours { .. })
    }
}

/// `a (why); b (why)`.
fn reasons(tried: &[(PathBuf, String)]) -> String {
    tried
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The log directories to try, in order, and whether their parents may be created:
/// `$XDG_STATE_HOME/tartape` (by default `~/.local/state/tartape`), as SPEC §5 says;
/// `$XDG_RUNTIME_DIR/tartape`; `<temporary directory>/tartape-<uid>`.
fn log_dir_candidates() -> Vec<(PathBuf, bool)> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let mut out = Vec::new();
    match absolute("XDG_STATE_HOME") {
        Some(state) => out.push((state.join("tartape"), true)),
        None => {
            if let Some(home) = absolute("HOME") {
                out.push((home.join(".local/state/tartape"), true));
            }
        }
    }
    if let Some(runtime) = absolute("XDG_RUNTIME_DIR") {
        out.push((runtime.join("tartape"), false));
    }
    let uid = rustix::process::getuid().as_raw();
    out.push((std::env::temp_dir().join(format!("tartape-{uid}")), false));
    out
}

/// A directory of background mounts' logs: mode 0700, owned by this user, held open, so
/// that every log is created in it by name, exclusively, never through a symlink.
pub struct LogDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl LogDir {
    /// Opens (creating it when missing) the log directory `path`, and its parents too
    /// with `create_parents`. A symlink, or a directory of another user (say, planted in
    /// a shared temporary directory), is refused. The error says why, for a message.
    fn open(path: &Path, create_parents: bool) -> Result<LogDir, String> {
        let io_why = |err: std::io::Error| err.to_string();
        if create_parents && let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_why)?;
        }
        match rustix::fs::mkdir(path, Mode::RWXU) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(err) => return Err(io_why(err.into())),
        }
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| match err {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                "not a directory (a symlink?)".to_string()
            }
            err => io_why(err.into()),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|err| io_why(err.into()))?;
        let uid = rustix::process::getuid().as_raw();
        if st.st_uid != uid {
            return Err(format!("it belongs to uid {}, not to uid {uid}", st.st_uid));
        }
        if st.st_mode & 0o777 != 0o700 {
            rustix::fs::fchmod(&fd, Mode::RWXU).map_err(|err| io_why(err.into()))?;
        }
        Ok(LogDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Creates the log `STEM.log` (or `STEM-N.log` when taken), mode 0600, after removing
    /// the oldest logs beyond [`KEPT_LOGS`] - 1.
    fn create(&self, stem: &str) -> Result<(File, String), String> {
        self.prune(KEPT_LOGS - 1);
        let flags = OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC;
        for n in 0..100 {
            let name = match n {
                0 => format!("{stem}.log"),
                n => format!("{stem}-{n}.log"),
            };
            match rustix::fs::openat(&self.fd, &name, flags, Mode::RUSR | Mode::WUSR) {
                Ok(fd) => return Ok((File::from(fd), name)),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(err) => return Err(std::io::Error::from(err).to_string()),
            }
        }
        Err(format!("cannot create a log named {stem}.log"))
    }

    /// Renames the log `from` to `to` unless `to` exists; whether it did.
    fn rename(&self, from: &str, to: &str) -> bool {
        rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .is_ok()
    }

    /// Removes the oldest `*.log` files beyond the newest `keep`.
    fn prune(&self, keep: usize) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        let mut logs: Vec<(std::time::SystemTime, OsString)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name();
                let meta = e.metadata().ok()?;
                if !(name.as_encoded_bytes().ends_with(b".log") && meta.is_file()) {
                    return None;
                }
                Some((meta.modified().ok()?, name))
            })
            .collect();
        logs.sort_by_key(|log| std::cmp::Reverse(log.0));
        for (_, name) in logs.into_iter().skip(keep) {
            let _ = rustix::fs::unlinkat(&self.fd, &name, rustix::fs::AtFlags::empty());
        }
    }
}

/// `--log FILE` / `-o log=FILE`: appended to, created with mode 0600, never through a
/// symlink.
fn open_chosen_log(path: &Path) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| Error::io(path, err))
}

/// The serving process ended cleanly and logged no warning: its log, a file of ours that
/// is its standard error (`--own-log`), says nothing worth keeping. Removed only while
/// the name still leads to that very file.
pub fn remove_own_log() {
    let Ok(path) = fs::read_link("/proc/self/fd/2") else {
        return;
    };
    let (Ok(open), Ok(named)) = (
        rustix::fs::fstat(std::io::stderr()),
        rustix::fs::lstat(&path),
    ) else {
        return;
    };
    let regular = rustix::fs::FileType::from_raw_mode(named.st_mode).is_file();
    if regular && (open.st_dev, open.st_ino) == (named.st_dev, named.st_ino) {
        let _ = fs::remove_file(&path);
    }
}

/// The last lines of a log, joined on one line for an error message.
pub fn log_tail(path: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn log_dir() -> (tempfile::TempDir, LogDir) {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::open(&dir.path().join("logs"), false).unwrap();
        (dir, logs)
    }

    #[test]
    fn a_log_is_never_written_through_a_planted_symlink() {
        let (dir, logs) = log_dir();
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let at = |name: &str| logs.path.join(name);
        std::os::unix::fs::symlink(&target, at("mount-7.log")).unwrap();
        let (mut file, name) = logs.create("mount-7").unwrap();
        assert_eq!(name, "mount-7-1.log");
        file.write_all(b"logged").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(at(&name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A rename never replaces what is there.
        assert!(!logs.rename(&name, "mount-7.log"));
        assert!(
            fs::symlink_metadata(at("mount-7.log"))
                .unwrap()
                .is_symlink()
        );
        assert!(at("mount-7-1.log").is_file());
    }

    #[test]
    fn a_log_directory_is_private_and_never_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Created 0700; one found open to others is closed.
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        LogDir::open(&open, false).unwrap();
        assert_eq!(
            fs::metadata(&open).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let made = dir.path().join("a/b/tartape");
        assert!(
            LogDir::open(&made, false).is_err(),
            "parents made without leave"
        );
        LogDir::open(&made, true).unwrap();
        assert_eq!(
            fs::metadata(&made).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A symlink planted where the directory goes is refused, not followed.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&elsewhere, &planted).unwrap();
        let why = LogDir::open(&planted, false).err().unwrap();
        assert!(why.contains("not a directory"), "{why}");
    }

    #[test]
    fn only_the_newest_logs_are_kept() {
        let (_dir, logs) = log_dir();
        for i in 0..30 {
            let path = logs.path.join(format!("old-{i:02}.log"));
            fs::write(&path, b"x").unwrap();
            let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 + i);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        fs::write(logs.path.join("notes.txt"), b"not a log").unwrap();
        logs.prune(KEPT_LOGS - 1);
        let mut left: Vec<String> = fs::read_dir(&logs.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left.len(), KEPT_LOGS);
        assert_eq!(left[0], "notes.txt");
        assert_eq!(left[1], "old-11.log");
        assert_eq!(left.last().unwrap(), "old-29.log");
    }
}
