//! The FUSE front end: a read-only filesystem holding one file, the tape.
//!
//! This is the only module that speaks `fuser`:
//! * [`fs`] translates kernel requests into calls on [`Tape`](crate::tape::Tape) and tape
//!   errors into errnos; it knows nothing of headers, offsets or the catalog;
//! * [`session`] mounts (directly as root, through `fusermount3` otherwise), serves until
//!   unmounted, and unmounts cleanly on SIGINT/SIGTERM/SIGHUP;
//! * [`system`] knows the system around a mount: the mount table, `/dev/fuse`,
//!   `fusermount3` and `umount2`, stale mounts, `/etc/fuse.conf`, readahead.
//!
//! ```no_run
//! use std::path::Path;
//! use tartape::mount::{self, MountOptions};
//! use tartape::tape::Tape;
//!
//! let tape = Tape::discover(Path::new("photos"))?;
//! let mountpoint = mount::check_mountpoint(Path::new("/mnt/photos"))?;
//! mount::check_fuse_available(false)?;
//! // Blocks until `tartape umount /mnt/photos`, Ctrl-C or SIGTERM.
//! mount::mount(tape, &mountpoint, &MountOptions::default())?.run()?;
//! # Ok::<(), tartape::Error>(())
//! ```

pub mod fs;
pub mod session;
pub mod system;

pub use fs::{Layout, TapeFs};
pub use session::{MountSession, mount, mount_foreground};
pub use system::{check_fuse_available, check_mountpoint, is_mount_point, tartape_mounts, unmount};

use crate::error::{Error, Result};

/// Name of the single file in the mount unless `--name` says otherwise.
pub const DEFAULT_NAME: &str = "archive.tar";

/// Request-serving threads when the caller does not choose.
pub const DEFAULT_THREADS: usize = 4;

/// Readahead set on the mount, in KiB. The kernel offers FUSE 128 KiB at INIT and fuser
/// cannot raise it past that offer; root can raise it afterwards through sysfs. Measured
/// with `cat` of a 2 GiB tape of large files: 2.5 GB/s at 128 KiB, 3.4 GB/s at 1 MiB,
/// 3.7 GB/s at 2 MiB, no better above (two 1 MiB requests in flight is enough).
pub const DEFAULT_READAHEAD_KB: u32 = 2048;

/// How the kernel may cache the tape file's pages.
///
/// Measured on a 2-core virtual machine (first `cat`/`dd` after mounting, source in the
/// page cache): `DirectIo` wins only for large sequential reads of large files (`cat` of a
/// 4 GiB tape 4.0–4.7 GB/s against 1.3–3.7 GB/s: there, filling fresh page-cache pages
/// is the bound, as for any writer of the page cache); it loses 3–5× for smaller reads
/// (`dd bs=10k` 0.4 vs 2.2 GB/s, `tar -xf`'s 10 KiB records), and 2× on a tape of small
/// files (0.4 vs 0.74 GB/s: one request in flight instead of readahead's several), and
/// re-reads are never cached. Hence `KeepCache` by default, `DirectIo` on request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Page cache, kept across opens (`FOPEN_KEEP_CACHE`): the content is immutable while
    /// the tape is intact. Re-reads and `mmap` are served by the kernel.
    #[default]
    KeepCache,
    /// Every `read(2)` goes to the tape (`FOPEN_DIRECT_IO`): no readahead, no cache.
    DirectIo,
}

/// How to mount a tape.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Name of the single file in the mount.
    pub name: String,
    /// The tape file alone, or its volumes and the catalog copy.
    pub layout: Layout,
    /// Let every user access the mount (`allow_other`; non-root mounters need
    /// `user_allow_other` in `/etc/fuse.conf`).
    pub allow_other: bool,
    /// Threads serving kernel requests (at least 1).
    pub threads: usize,
    /// Page cache policy of the tape file.
    pub cache: CacheMode,
    /// Readahead to set on the mount through `/sys/class/bdi/…/read_ahead_kb`, best effort
    /// (it needs root); `None` keeps the kernel's default.
    pub readahead_kb: Option<u32>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            name: DEFAULT_NAME.to_string(),
            layout: Layout::Single,
            allow_other: false,
            threads: DEFAULT_THREADS,
            cache: CacheMode::default(),
            readahead_kb: Some(DEFAULT_READAHEAD_KB),
        }
    }
}

/// The file name must be a single path component.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        return Err(Error::Usage(format!(
            "--name {name:?}: must be a single file name (no '/', not '.' or '..', at most 255 bytes)"
        )));
    }
    Ok(())
}

/// Whether `record` is fuser's error for a reply the kernel no longer takes: the request
/// was interrupted, or the mount went away while it was being answered (a `release` still
/// in flight when `tartape umount` came). Nobody waits for that reply: a logger may write
/// it but need not count it as a warning (a background mount that ends cleanly without
/// one removes its log).
pub fn is_reply_nobody_awaits(record: &log::Record<'_>) -> bool {
    record.target().starts_with("fuser")
        && record
            .args()
            .to_string()
            .starts_with("Failed to send FUSE reply")
}

/// Error messages from the system may span lines; ours are one line.
pub(super) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_replies_the_kernel_gave_up_on_are_not_warnings() {
        let gave_up = |target: &str, message: std::fmt::Arguments<'_>| {
            is_reply_nobody_awaits(
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
    fn names_must_be_one_component() {
        assert!(validate_name("archive.tar").is_ok());
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
