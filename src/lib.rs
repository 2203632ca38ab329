//! tartape: record a directory into a catalog that fixes the exact bytes of a
//! deterministic TAR archive, then serve any byte range of it on demand.
//!
//! [`TapeRecorder`] walks a directory and writes its catalog; [`Tape`] opens the tape,
//! bound to the directory it was recorded from, and answers [`Tape::read_at`] from any
//! number of threads; its [`TapePlayer`] plays a byte range as [`Event`]s; [`mount`]
//! serves it as one read-only file over FUSE. No byte is served that no longer matches
//! the recorded snapshot: that is an [`Error::Integrity`].
//!
//! ```
//! use std::fs;
//! use tartape::{Event, Tape, TapeRecorder};
//!
//! // A small tree: photos/a.txt and photos/album/b.jpg.
//! let dir = tempfile::tempdir()?;
//! let src = dir.path().join("photos");
//! fs::create_dir_all(src.join("album"))?;
//! fs::write(src.join("a.txt"), b"hello")?;
//! fs::write(src.join("album/b.jpg"), vec![7u8; 2000])?;
//!
//! // Record it (the catalog goes to photos/.tartape/index.db), then open the tape.
//! let summary = TapeRecorder::new(&src).commit()?;
//! let tape = Tape::discover(&src)?;
//! assert_eq!(tape.fingerprint(), summary.fingerprint);
//!
//! // Any byte range, on demand: the first header is the root directory's.
//! let mut header = [0u8; 512];
//! tape.read_at(0, &mut header)?;
//! assert_eq!(&header[..7], b"photos/");
//! let mut whole = vec![0u8; tape.total_size() as usize];
//! assert_eq!(tape.read_at(0, &mut whole)?, whole.len());
//!
//! // Events from byte 1000 on, inside a.txt's header: as a resumed upload sees them.
//! let (mut started, mut ended, mut bytes, mut completed) = (vec![], 0, 0, false);
//! tape.player().play(1000, None, |event| {
//!     match event {
//!         Event::FileStart { resumed, .. } => started.push(resumed),
//!         Event::Data(data) => bytes += data.len() as u64,
//!         Event::FileEnd { .. } => ended += 1,
//!         Event::TapeCompleted { .. } => completed = true,
//!         _ => {}
//!     }
//!     Ok(())
//! })?;
//! // a.txt (resumed: its first bytes were not played), album, album/b.jpg.
//! assert_eq!((started, ended), (vec![true, false, false], 3));
//! assert_eq!(bytes, tape.total_size() - 1000);
//! assert!(completed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod catalog;
pub mod digest;
pub mod entry;
pub mod error;
pub mod header;
pub mod layout;
pub mod manifest;
pub mod mount;
pub mod player;
mod readahead;
pub mod record;
pub mod restore;
pub mod s3;
pub mod serve;
pub mod source;
pub mod tape;
pub mod text;
pub mod upload;
pub mod volume;
pub mod walk;

pub use digest::HashAlgo;
pub use entry::{Entry, Kind, Ordinal};
pub use error::{Discrepancy, Error, Result};
pub use player::{Event, TapePlayer};
pub use record::{RecordSummary, TapeRecorder};
pub use tape::{Located, Tape, VerifyLevel};
