//! The system around a mount: pre-mount checks, the mount table (`/proc/self/mountinfo`),
//! `/dev/fuse`, `fusermount3` and `umount2`, stale mounts, `/etc/fuse.conf`, readahead.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use log::debug;

use super::one_line;
use crate::error::{Error, Result};

/// What to do when `/dev/fuse` cannot be opened by a user who is not root.
pub(super) fn dev_fuse_hint() -> String {
    let (mode, owner) = fs::metadata("/dev/fuse").map_or((0, 0), |m| (m.mode() & 0o7777, m.uid()));
    format!(
        "/dev/fuse is mode {mode:04o}, owner uid {owner}, and fusermount3 opens it as the user \
         who mounts: give that user read and write access to /dev/fuse (most systems make it \
         0666) or mount as root"
    )
}

/// Raises the readahead of the FUSE mount `entry` through sysfs. Best effort:
/// writing there needs root, and the mount works without it.
pub(super) fn raise_readahead(entry: &MountEntry, readahead_kb: u32) {
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        entry.dev_major, entry.dev_minor
    );
    match fs::write(&knob, readahead_kb.to_string()) {
        Ok(()) => debug!("readahead: {knob} = {readahead_kb}"),
        Err(err) => debug!("readahead: cannot write {knob}: {err}"),
    }
}

/// Checks that `mountpoint` can take a mount: it exists, is a directory, is not already a
/// mount point (live or stale) and is empty. Returns its canonical path.
pub fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    let shown = mountpoint.display();
    let metadata = match fs::metadata(mountpoint) {
        Ok(metadata) => metadata,
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(Error::Mount(format!(
                "{shown}: a dead mount is still attached here (transport endpoint is not \
                 connected); run `tartape umount {shown}` first"
            )));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Mount(format!("{shown}: mount point does not exist")));
        }
        Err(err) => return Err(Error::io(mountpoint, err)),
    };
    if !metadata.is_dir() {
        return Err(Error::Mount(format!(
            "{shown}: mount point is not a directory"
        )));
    }
    let canonical = mountpoint
        .canonicalize()
        .map_err(|err| Error::io(mountpoint, err))?;
    if is_mount_point(&canonical)? {
        return Err(Error::Mount(format!(
            "{shown}: already a mount point (unmount it first, e.g. `tartape umount {shown}`)"
        )));
    }
    let mut entries = fs::read_dir(&canonical).map_err(|err| Error::io(mountpoint, err))?;
    if entries.next().is_some() {
        return Err(Error::Mount(format!("{shown}: mount point is not empty")));
    }
    Ok(canonical)
}

/// Checks that this process can mount a FUSE filesystem: `/dev/fuse` exists; root opens
/// it and mounts directly; any other user mounts through `fusermount3` (setuid), which
/// must be installed. With `allow_other`, a non-root user also needs `user_allow_other`
/// in `/etc/fuse.conf`. Each failure names its cause and what to do.
pub fn check_fuse_available(allow_other: bool) -> Result<()> {
    match fs::metadata("/dev/fuse") {
        Ok(metadata) if metadata.file_type().is_char_device() => {}
        Ok(_) => {
            return Err(Error::Mount(
                "/dev/fuse: not a character device; FUSE is unavailable".to_string(),
            ));
        }
        Err(_) => {
            return Err(Error::Mount(
                "/dev/fuse: not found; FUSE is unavailable (load it with `modprobe fuse`, \
                 or give the container the device)"
                    .to_string(),
            ));
        }
    }
    let device = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    if is_root() {
        return device.map(drop).map_err(|err| {
            Error::Mount(format!(
                "/dev/fuse: cannot be opened ({err}); FUSE is unavailable"
            ))
        });
    }
    if find_fusermount().is_none() {
        let why = match device {
            Err(err) => format!(
                "/dev/fuse cannot be opened by this user ({err}; {}) and fusermount3, which \
                 mounts for users, is not installed",
                dev_fuse_hint()
            ),
            Ok(_) => "fusermount3 is not installed, and only root may mount without it".to_string(),
        };
        return Err(Error::Mount(format!(
            "cannot mount as a user who is not root: {why}; install the fuse3 package \
             (or mount as root)"
        )));
    }
    if allow_other && !user_allow_other_enabled() {
        return Err(Error::Mount(
            "--allow-other: /etc/fuse.conf must contain the line `user_allow_other` for a \
             non-root user to use it"
                .to_string(),
        ));
    }
    Ok(())
}

/// True when `/etc/fuse.conf` enables `user_allow_other`.
fn user_allow_other_enabled() -> bool {
    fs::read_to_string("/etc/fuse.conf").is_ok_and(|conf| {
        conf.lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .any(|line| line == "user_allow_other")
    })
}

/// True when `path` (canonical, or at least absolute) is the mount point of some mount.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    match read_mountinfo() {
        Ok(entries) => Ok(entries.iter().any(|entry| entry.mount_point == path)),
        // Without /proc, a mount point is a directory on another device than its parent.
        Err(_) => {
            let Some(parent) = path.parent() else {
                return Ok(true);
            };
            let dev = fs::symlink_metadata(path).map_err(|err| Error::io(path, err))?;
            let parent_dev = fs::metadata(parent).map_err(|err| Error::io(parent, err))?;
            Ok(dev.dev() != parent_dev.dev())
        }
    }
}

/// Unmounts the FUSE mount at `mountpoint`: a live one (its serving process then exits)
/// or a stale one whose process died ("Transport endpoint is not connected").
///
/// A live mount that is busy (a process has the file open) is refused; a stale busy one
/// is detached lazily, since nobody can be served by it any more.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let path = resolve_mountpoint(mountpoint)?;
    let shown = mountpoint.display();
    let Some(entry) = mount_entry(&path) else {
        return Err(Error::Mount(format!("{shown}: not mounted")));
    };
    if !entry.fs_type.starts_with("fuse") {
        return Err(Error::Mount(format!(
            "{shown}: not a FUSE mount (it is {}); not unmounting it",
            entry.fs_type
        )));
    }
    let me = rustix::process::getuid().as_raw();
    if let Some(owner) = entry.user_id.filter(|&owner| owner != me && !is_root()) {
        return Err(Error::Mount(format!(
            "{shown}: cannot unmount: not the owner of this mount (uid {owner} mounted it); \
             only that user or root can"
        )));
    }
    let result = if is_root() {
        umount_syscall(&path, rustix::mount::UnmountFlags::empty())
    } else {
        fusermount(&path, false)
    };
    if let Err(err) = result {
        if is_stale(&path) {
            debug!("{}: stale mount, detaching: {err}", path.display());
            detach(&path)?;
        } else if err.raw_os_error() == Some(libc::EBUSY) || err.to_string().contains("busy") {
            return Err(Error::Mount(format!(
                "{shown}: mount point is busy (a process is still using it); close it and retry"
            )));
        } else {
            return Err(Error::Mount(format!(
                "{shown}: cannot unmount: {}",
                one_line(&err.to_string())
            )));
        }
    }
    if mount_entry(&path).is_some_and(|after| after.mount_id == entry.mount_id) {
        return Err(Error::Mount(format!(
            "{shown}: still mounted after unmounting"
        )));
    }
    Ok(())
}

/// Detaches the mount at `path` now (`MNT_DETACH`, or `fusermount3 -uz`): it disappears
/// from the namespace at once and is destroyed when its last user goes away.
pub(super) fn detach(path: &Path) -> Result<()> {
    let result = if is_root() {
        umount_syscall(path, rustix::mount::UnmountFlags::DETACH)
    } else {
        fusermount(path, true)
    };
    result.map_err(|err| {
        Error::Mount(format!(
            "{}: cannot detach the mount: {}",
            path.display(),
            one_line(&err.to_string())
        ))
    })
}

/// True when the mount at `path` no longer has a serving process.
fn is_stale(path: &Path) -> bool {
    matches!(fs::metadata(path), Err(err) if err.raw_os_error() == Some(libc::ENOTCONN))
}

fn umount_syscall(path: &Path, flags: rustix::mount::UnmountFlags) -> io::Result<()> {
    Ok(rustix::mount::unmount(path, flags)?)
}

pub(super) fn fusermount(path: &Path, lazy: bool) -> io::Result<()> {
    let program = find_fusermount().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "fusermount3 not found (install the fuse3 package)",
        )
    })?;
    let mut command = Command::new(&program);
    command.arg("-u").arg("-q");
    if lazy {
        command.arg("-z");
    }
    let output = command.arg("--").arg(path).stdin(Stdio::null()).output()?;
    let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.success() {
        true => Ok(()),
        false if said.is_empty() => Err(io::Error::other(format!(
            "{} -u failed ({}) and said nothing",
            program.display(),
            output.status
        ))),
        false => Err(io::Error::other(said)),
    }
}

/// `fusermount3` (or the older `fusermount`) found on PATH or in the usual places.
pub(super) fn find_fusermount() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback = [PathBuf::from("/usr/bin"), PathBuf::from("/bin")];
    ["fusermount3", "fusermount"].iter().find_map(|name| {
        path_dirs
            .iter()
            .chain(fallback.iter())
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

pub(super) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Absolute, symlink-free form of a mount point, also for a stale mount whose own
/// `stat` fails: then the parent is resolved and the last component appended.
pub(super) fn resolve_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    match mountpoint.canonicalize() {
        Ok(path) => Ok(path),
        Err(err) => {
            let absolute =
                std::path::absolute(mountpoint).map_err(|_| Error::io(mountpoint, err))?;
            let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
                return Err(Error::Mount(format!(
                    "{}: not a usable mount point",
                    mountpoint.display()
                )));
            };
            let parent = parent
                .canonicalize()
                .map_err(|err| Error::io(parent, err))?;
            Ok(parent.join(name))
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountEntry {
    pub(super) mount_id: u64,
    pub(super) dev_major: u32,
    pub(super) dev_minor: u32,
    pub(super) mount_point: PathBuf,
    pub(super) fs_type: String,
    pub(super) source: PathBuf,
    /// The `user_id=` of a FUSE mount: who mounted it.
    pub(super) user_id: Option<u32>,
}

/// The tartape mounts in the mount table (type `fuse.tartape`): mount point and source,
/// in the order they were made.
pub fn tartape_mounts() -> Vec<(PathBuf, PathBuf)> {
    read_mountinfo()
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| entry.fs_type == "fuse.tartape")
        .map(|entry| (entry.mount_point, entry.source))
        .collect()
}

/// The most recent mount on `path` (the one visible there), if any.
pub(super) fn mount_entry(path: &Path) -> Option<MountEntry> {
    read_mountinfo()
        .ok()?
        .into_iter()
        .rev()
        .find(|entry| entry.mount_point == path)
}

fn read_mountinfo() -> io::Result<Vec<MountEntry>> {
    let text = fs::read("/proc/self/mountinfo")?;
    Ok(text
        .split(|&byte| byte == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

/// Parses `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let mut fields = line.split(|&byte| byte == b' ');
    let mount_id = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let _parent_id = fields.next()?;
    let dev = std::str::from_utf8(fields.next()?).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let _root = fields.next()?;
    let mount_point = PathBuf::from(OsString::from_vec(unescape_mountinfo(fields.next()?)));
    // Optional fields end with a lone "-", then comes the filesystem type.
    let mut rest = fields.skip_while(|field| *field != b"-").skip(1);
    let fs_type = rest.next()?;
    let source = PathBuf::from(OsString::from_vec(unescape_mountinfo(rest.next()?)));
    let user_id = rest.next().and_then(|options| {
        options
            .split(|&b| b == b',')
            .find_map(|o| o.strip_prefix(b"user_id="))
            .and_then(|id| std::str::from_utf8(id).ok()?.parse().ok())
    });
    Some(MountEntry {
        mount_id,
        dev_major: major.parse().ok()?,
        dev_minor: minor.parse().ok()?,
        mount_point,
        fs_type: String::from_utf8_lossy(fs_type).into_owned(),
        source,
        user_id,
    })
}

/// Undoes the kernel's `\ooo` octal escaping of spaces, tabs, newlines and backslashes.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut index = 0;
    while index < field.len() {
        let octal = field.get(index + 1..index + 4);
        if field[index] == b'\\'
            && let Some(digits) = octal
            && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                index += 4;
                continue;
            }
        }
        out.push(field[index]);
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let line = b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw";
        let entry = parse_mountinfo_line(line).unwrap();
        assert_eq!(entry.mount_id, 36);
        assert_eq!((entry.dev_major, entry.dev_minor), (98, 0));
        assert_eq!(entry.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(entry.fs_type, "ext3");

        let fuse = b"612 29 0:77 / /tmp/m rw,nosuid,nodev,relatime - fuse tartape rw,user_id=0";
        let entry = parse_mountinfo_line(fuse).unwrap();
        assert_eq!((entry.dev_major, entry.dev_minor), (0, 77));
        assert_eq!(entry.fs_type, "fuse");

        assert_eq!(parse_mountinfo_line(b""), None);
        assert_eq!(parse_mountinfo_line(b"garbage"), None);
    }

    #[test]
    fn unescapes_octal_sequences_only() {
        assert_eq!(
            unescape_mountinfo(b"a\\040b\\011c\\012d\\134e"),
            b"a b\tc\nd\\e"
        );
        assert_eq!(unescape_mountinfo(b"tail\\"), b"tail\\");
        assert_eq!(unescape_mountinfo(b"\\9ab"), b"\\9ab");
        assert_eq!(unescape_mountinfo(b"\\777"), b"\\777");
    }

    #[test]
    fn root_is_a_mount_point_and_tmp_subdir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = std::env::temp_dir().join(format!("tartape-mp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let canonical = dir.canonicalize().unwrap();
        assert!(!is_mount_point(&canonical).unwrap());
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn mountpoint_checks_name_the_problem() {
        let base = std::env::temp_dir().join(format!("tartape-mpc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("full")).unwrap();
        fs::write(base.join("full/x"), b"x").unwrap();
        fs::write(base.join("file"), b"x").unwrap();
        fs::create_dir_all(base.join("empty")).unwrap();

        let message = |path: &str| check_mountpoint(&base.join(path)).unwrap_err().to_string();
        assert!(message("missing").contains("does not exist"));
        assert!(message("file").contains("not a directory"));
        assert!(message("full").contains("not empty"));
        assert!(
            check_mountpoint(Path::new("/"))
                .unwrap_err()
                .to_string()
                .contains("already a mount point")
        );
        assert_eq!(
            check_mountpoint(&base.join("empty")).unwrap(),
            base.join("empty").canonicalize().unwrap()
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
