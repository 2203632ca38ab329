//! What a window of the tape holds (the Python tartape's `VolumeManifest`): every entry
//! whose bytes `[start_offset, end_offset)` overlap the window, with its state in it
//! (complete, head, body, tail) and the slice of its content the window holds. A window
//! is a volume (SPEC §8), an upload part (§9) or any range a front end serves.
//!
//! The first and last entries come from the offset table alone (two binary searches);
//! the rows are read only when [`Manifest::entries`] walks them.

use std::fmt;

use crate::catalog::Catalog;
use crate::entry::{Entry, Ordinal};
use crate::error::Result;
use crate::layout::{OffsetTable, content_start, end_offset};

/// How an entry lies in a window, as the Python tartape's `EntryState` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// The entry starts and ends in the window.
    Complete,
    /// It starts in the window and ends after it.
    Head,
    /// It starts before the window and ends after it.
    Body,
    /// It starts before the window and ends in it.
    Tail,
}

impl EntryState {
    /// The Python tartape's name: `complete`, `head`, `body`, `tail`.
    pub fn name(self) -> &'static str {
        match self {
            EntryState::Complete => "complete",
            EntryState::Head => "head",
            EntryState::Body => "body",
            EntryState::Tail => "tail",
        }
    }

    /// The state of the entry `[start, end)` in the window `[window_start, window_end)`.
    pub fn of(start: u64, end: u64, window_start: u64, window_end: u64) -> EntryState {
        match (start >= window_start, end <= window_end) {
            (true, true) => EntryState::Complete,
            (true, false) => EntryState::Head,
            (false, true) => EntryState::Tail,
            (false, false) => EntryState::Body,
        }
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The part of a file's content inside a window (the Python `FileSlice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentSlice {
    /// Where it starts inside the window (for a volume: the offset in the volume file).
    pub window_offset: u64,
    /// How many content bytes.
    pub length: u64,
    /// Where they start inside the file.
    pub source_offset: u64,
}

/// One entry of a window.
#[derive(Debug, Clone)]
pub struct ManifestEntry {
    /// The entry's row.
    pub entry: Entry,
    /// How it lies in the window.
    pub state: EntryState,
    /// Its bytes in the window, relative to the window's start: `[from, to)`.
    pub local: (u64, u64),
    /// The part of its content in the window; `None` for directories, symlinks, empty
    /// files and windows that hold only its head or padding.
    pub content: Option<ContentSlice>,
}

/// The entries of the tape window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    start: u64,
    end: u64,
    /// First and last entries overlapping the window; `None` when it lies in the footer.
    range: Option<(Ordinal, Ordinal)>,
}

impl Manifest {
    /// The manifest of window `[start, end)` of the tape whose offsets are `offsets`
    /// (clamped to the tape).
    pub fn new(offsets: &OffsetTable, start: u64, end: u64) -> Manifest {
        let end = end.min(offsets.total_size());
        let stop = end.min(offsets.footer_start());
        let range = match offsets.entry_at(start) {
            Some(first) if start < stop => offsets.entry_at(stop - 1).map(|last| (first, last)),
            _ => None,
        };
        Manifest { start, end, range }
    }

    /// The window's first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the window's last byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The first entry overlapping the window; `None` for a window inside the footer.
    pub fn first(&self) -> Option<Ordinal> {
        self.range.map(|(first, _)| first)
    }

    /// The last entry overlapping the window; `None` for a window inside the footer.
    pub fn last(&self) -> Option<Ordinal> {
        self.range.map(|(_, last)| last)
    }

    /// How many entries overlap the window.
    pub fn len(&self) -> u64 {
        self.range.map_or(0, |(first, last)| last.0 - first.0 + 1)
    }

    /// Whether no entry overlaps the window (it lies in the footer).
    pub fn is_empty(&self) -> bool {
        self.range.is_none()
    }

    /// Calls `f` with every entry of the window, in tape order, until it returns
    /// `Ok(false)`. Rows are read in batches, never all at once.
    pub fn entries(
        &self,
        catalog: &Catalog,
        mut f: impl FnMut(ManifestEntry) -> Result<bool>,
    ) -> Result<()> {
        let Some((first, last)) = self.range else {
            return Ok(());
        };
        catalog.for_each_from(first, |entry| {
            if entry.ordinal > last {
                return Ok(false);
            }
            let item = self.entry(entry);
            f(item)
        })
    }

    /// `entry` (which overlaps the window) as the window sees it.
    pub fn entry(&self, entry: Entry) -> ManifestEntry {
        let (start, end) = (entry.start_offset, end_offset(&entry));
        let state = EntryState::of(start, end, self.start, self.end);
        let local = (
            start.max(self.start) - self.start,
            end.min(self.end).max(self.start) - self.start,
        );
        let content = {
            let from = content_start(&entry);
            let to = from + entry.size;
            let (a, b) = (from.max(self.start), to.min(self.end));
            (a < b).then(|| ContentSlice {
                window_offset: a - self.start,
                length: b - a,
                source_offset: a - from,
            })
        };
        ManifestEntry {
            entry,
            state,
            local,
            content,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::FOOTER_LEN;

    #[test]
    fn first_and_last_are_the_entries_overlapping_the_window() {
        // Entries [0, 512), [512, 2048) (1000 bytes), [2048, 2560); footer [2560, 3584).
        let t = OffsetTable::from_sizes([0u64, 1000, 0], Vec::new()).unwrap();
        assert_eq!(t.total_size(), 2560 + FOOTER_LEN);
        let m = |s, e| {
            let m = Manifest::new(&t, s, e);
            (m.first().map(|o| o.0), m.last().map(|o| o.0), m.len())
        };
        assert_eq!(m(0, 512), (Some(0), Some(0), 1));
        assert_eq!(m(0, 513), (Some(0), Some(1), 2));
        // A window reaching the footer still names the last entry it holds.
        assert_eq!(m(1024, 3584), (Some(1), Some(2), 2));
        assert_eq!(m(0, 3584), (Some(0), Some(2), 3));
        assert_eq!(m(2048, 4096), (Some(2), Some(2), 1));
        // Wholly in the footer: no entry.
        assert_eq!(m(2560, 3584), (None, None, 0));
        assert_eq!(m(3072, 3584), (None, None, 0));
        assert!(Manifest::new(&t, 2560, 3584).is_empty());
    }

    #[test]
    fn states_and_slices_follow_the_python_manifest() {
        // Entry 1: header [512, 1024), content [1024, 2024), padding to 2048.
        let t = OffsetTable::from_sizes([0u64, 1000, 0], Vec::new()).unwrap();
        let e = Entry::sample_file(1000, 512);
        let at = |s, e_: u64| Manifest::new(&t, s, e_).entry(e.clone());
        // [1024, 1536): content bytes [0, 512) of the file, which goes on: a body.
        let item = at(1024, 1536);
        assert_eq!(item.state, EntryState::Body);
        assert_eq!(item.local, (0, 512));
        assert_eq!(
            item.content,
            Some(ContentSlice {
                window_offset: 0,
                length: 512,
                source_offset: 0,
            })
        );
        // [0, 1024): its header only: a head, no content.
        let item = at(0, 1024);
        assert_eq!(
            (item.state, item.local, item.content),
            (EntryState::Head, (512, 1024), None)
        );
        // [1536, 2560): the last 488 content bytes, the padding and the next entry.
        let item = at(1536, 2560);
        assert_eq!(item.state, EntryState::Tail);
        assert_eq!(item.local, (0, 512));
        assert_eq!(
            item.content,
            Some(ContentSlice {
                window_offset: 0,
                length: 488,
                source_offset: 512,
            })
        );
        // [2024, 2560): only its padding: a tail with no content.
        let item = at(2024, 2560);
        assert_eq!((item.state, item.content), (EntryState::Tail, None));
        let item = at(0, 4096);
        assert_eq!(
            (item.state, item.local),
            (EntryState::Complete, (512, 2048))
        );
        assert_eq!(item.content.map(|c| c.window_offset), Some(1024));
        assert_eq!(EntryState::Body.to_string(), "body");
    }
}
