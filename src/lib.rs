//! tartape: record a directory into a catalog that fixes the exact bytes of a
//! deterministic TAR archive, then serve any byte range of it on demand.
//!
//! ```no_run
//! use tartape::{Tape, TapeRecorder};
//! let summary = TapeRecorder::new("photos").commit()?;
//! let tape = Tape::discover("photos")?;
//! assert_eq!(tape.fingerprint(), summary.fingerprint);
//! let mut first_block = [0u8; 512];
//! tape.read_at(0, &mut first_block)?;
//! # Ok::<(), tartape::Error>(())
//! ```

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
pub mod source;
pub mod tape;
pub mod text;
pub mod volume;
pub mod walk;

pub use digest::HashAlgo;
pub use entry::{Entry, Kind, Ordinal};
pub use error::{Discrepancy, Error, Result};
pub use player::{Event, TapePlayer};
pub use record::{RecordSummary, TapeRecorder};
pub use tape::{Located, Tape, VerifyLevel};
