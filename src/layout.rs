//! Where every byte of a tape comes from: footprints, offsets, and which part of which
//! entry covers byte N. Pure arithmetic, no I/O.

use crate::entry::{Entry, Ordinal};
use crate::header::BLOCK;

/// Size of the zero footer that ends every tape.
pub const FOOTER_LEN: u64 = 1024;

/// Zero bytes needed after `size` content bytes to reach a block boundary.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Bytes before the content: the ustar header, preceded for a long entry by its `x`
/// header and records padded to a block (`pax_size` is the records' length, 0 for none).
pub fn head_len(pax_size: u64) -> u64 {
    // (Saturating: only a corrupted catalog has records this long, and it is refused.)
    head_len_checked(pax_size).unwrap_or(u64::MAX)
}

/// [`head_len`], `None` when it would not fit 64 bits (a corrupted catalog).
fn head_len_checked(pax_size: u64) -> Option<u64> {
    if pax_size == 0 {
        return Some(BLOCK);
    }
    pax_size
        .checked_add(padding(pax_size))?
        .checked_add(2 * BLOCK)
}

/// Head + content + padding (SPEC §1: 512 + size + pad, and for a long entry 512 +
/// records padded to 512 more).
pub fn footprint(pax_size: u64, size: u64) -> u64 {
    footprint_checked(pax_size, size).unwrap_or(u64::MAX)
}

/// [`footprint`], `None` when it would not fit 64 bits (a corrupted catalog).
pub fn footprint_checked(pax_size: u64, size: u64) -> Option<u64> {
    head_len_checked(pax_size)?
        .checked_add(size)?
        .checked_add(padding(size))
}

/// Offset of an entry's first content byte.
pub fn content_start(entry: &Entry) -> u64 {
    entry.start_offset.saturating_add(head_len(entry.pax_size))
}

/// Offset one past an entry's last byte (head + content + padding).
pub fn end_offset(entry: &Entry) -> u64 {
    entry
        .start_offset
        .saturating_add(footprint(entry.pax_size, entry.size))
}

/// The parts of a tape a byte can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The `x` header of a long entry.
    PaxHeader,
    /// Its records, padded to a block.
    PaxRecords,
    /// The 512-byte ustar header.
    Header,
    /// A regular file's bytes, read from the source file.
    Content,
    /// Zeros after the content up to the next 512-byte boundary.
    Padding,
}

impl Part {
    /// The words `locate` prints: `header`, `content`, `pax records`, …
    pub fn name(self) -> &'static str {
        match self {
            Part::PaxHeader => "pax header",
            Part::PaxRecords => "pax records",
            Part::Header => "header",
            Part::Content => "content",
            Part::Padding => "padding",
        }
    }
}

/// What covers one byte of the tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Inside entry `ordinal`, in `part`, `offset_in_part` bytes into it.
    Entry {
        /// The entry that holds the byte.
        ordinal: Ordinal,
        /// Which part of it.
        part: Part,
        /// Bytes from the start of that part to the byte.
        offset_in_part: u64,
    },
    /// Inside the 1024-byte footer.
    Footer {
        /// Bytes from the footer's start to the byte (below 1024).
        offset_in_footer: u64,
    },
}

/// The start offset of every entry, in tape order, plus the tape's total size.
///
/// Invariant: `starts` is strictly increasing, `starts[0] == 0` when non-empty, and every
/// gap is a footprint; `total_size = last start + last footprint + FOOTER_LEN`. The catalog
/// checks this on open, so lookups here never fail for offsets below `total_size`.
#[derive(Debug, Clone)]
pub struct OffsetTable {
    starts: Vec<u64>,
    /// `(ordinal, pax_size)` of the long entries, by ordinal: few or none, so a tape of a
    /// million ordinary entries costs nothing more than its starts.
    long: Vec<(u64, u64)>,
    total_size: u64,
}

impl OffsetTable {
    /// Builds the table from entry sizes in tape order and the `(ordinal, pax_size)` of
    /// the long entries, ordinals increasing; `None` when these cannot be a tape: a long
    /// entry out of order, out of range or with no records, or a tape larger than 2^64
    /// bytes (only a corrupted catalog can say so).
    pub fn from_sizes(
        sizes: impl IntoIterator<Item = u64>,
        long: Vec<(u64, u64)>,
    ) -> Option<OffsetTable> {
        // (Long entries out of order, repeated or out of range are left over below.)
        if long.iter().any(|&(_, pax_size)| pax_size == 0) {
            return None;
        }
        let mut starts = Vec::new();
        let mut offset: u64 = 0;
        let mut next_long = long.iter().peekable();
        for (i, size) in sizes.into_iter().enumerate() {
            starts.push(offset);
            let pax_size = next_long
                .next_if(|&&(ordinal, _)| ordinal == i as u64)
                .map_or(0, |&(_, pax_size)| pax_size);
            offset = offset.checked_add(footprint_checked(pax_size, size)?)?;
        }
        if next_long.next().is_some() {
            return None;
        }
        Some(OffsetTable {
            starts,
            long,
            total_size: offset.checked_add(FOOTER_LEN)?,
        })
    }

    /// Length of the `x` header's records of entry `ordinal` (0: it has none).
    pub fn pax_size(&self, ordinal: Ordinal) -> u64 {
        self.long
            .binary_search_by_key(&ordinal.0, |&(o, _)| o)
            .map_or(0, |i| self.long[i].1)
    }

    /// The long entries' `(ordinal, pax_size)`, by ordinal.
    pub fn long_entries(&self) -> &[(u64, u64)] {
        &self.long
    }

    /// Bytes of the whole tape, footer included.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Entries on the tape (the root included).
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether the tape has no entry at all (only a footer).
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Start offset of the entry (its header).
    pub fn start(&self, ordinal: Ordinal) -> u64 {
        self.starts[ordinal.0 as usize]
    }

    /// Offset one past the entry's padding (the next entry's start, or the footer).
    pub fn end(&self, ordinal: Ordinal) -> u64 {
        let i = ordinal.0 as usize;
        self.starts
            .get(i + 1)
            .copied()
            .unwrap_or(self.total_size - FOOTER_LEN)
    }

    /// Offset where the footer begins.
    pub fn footer_start(&self) -> u64 {
        self.total_size - FOOTER_LEN
    }

    /// Which entry contains `offset` (binary search), or `None` in the footer / past the end.
    pub fn entry_at(&self, offset: u64) -> Option<Ordinal> {
        if offset >= self.footer_start() {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= offset) - 1;
        Some(Ordinal(i as u64))
    }

    /// Which part of which entry covers byte `offset`; `None` at or past the end.
    /// `size` gives an entry's content size (the table stores only offsets).
    pub fn position(&self, offset: u64, size: impl Fn(Ordinal) -> u64) -> Option<Position> {
        if offset >= self.total_size {
            return None;
        }
        let Some(ordinal) = self.entry_at(offset) else {
            return Some(Position::Footer {
                offset_in_footer: offset - self.footer_start(),
            });
        };
        let within = offset - self.start(ordinal);
        let size = size(ordinal);
        let head = head_len(self.pax_size(ordinal));
        let pax = head - BLOCK;
        let (part, offset_in_part) = if within < pax.min(BLOCK) {
            (Part::PaxHeader, within)
        } else if within < pax {
            (Part::PaxRecords, within - BLOCK)
        } else if within < head {
            (Part::Header, within - pax)
        } else if within < head + size {
            (Part::Content, within - head)
        } else {
            (Part::Padding, within - head - size)
        };
        Some(Position::Entry {
            ordinal,
            part,
            offset_in_part,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprints_at_block_edges() {
        assert_eq!(footprint(0, 0), 512);
        assert_eq!(footprint(0, 1), 1024);
        assert_eq!(footprint(0, 511), 1024);
        assert_eq!(footprint(0, 512), 1024);
        assert_eq!(footprint(0, 513), 1536);
        assert_eq!(padding(513), 511);
        // A long entry: x header + records padded to a block, then the usual.
        assert_eq!(head_len(1), 1536);
        assert_eq!(head_len(512), 1536);
        assert_eq!(head_len(513), 2048);
        assert_eq!(footprint(300, 0), 1536);
        assert_eq!(footprint(600, 10), 2048 + 512);
    }

    #[test]
    fn long_entries_have_pax_parts_and_move_what_follows() {
        let sizes = [0u64, 10, 0];
        // Entry 1 has 600 bytes of records: x header [512, 1024), records [1024, 2048),
        // header [2048, 2560), content [2560, 2570), padding to 3072.
        let t = OffsetTable::from_sizes(sizes, vec![(1, 600)]).unwrap();
        assert_eq!(t.start(Ordinal(1)), 512);
        assert_eq!(t.start(Ordinal(2)), 3072);
        assert_eq!(t.total_size(), 3072 + 512 + 1024);
        assert_eq!(t.pax_size(Ordinal(1)), 600);
        assert_eq!(t.pax_size(Ordinal(0)), 0);
        let size = |o: Ordinal| sizes[o.0 as usize];
        let at = |off| match t.position(off, size).unwrap() {
            Position::Entry {
                ordinal,
                part,
                offset_in_part,
            } => (ordinal.0, part, offset_in_part),
            Position::Footer { .. } => panic!("footer at {off}"),
        };
        assert_eq!(at(511), (0, Part::Header, 511));
        assert_eq!(at(512), (1, Part::PaxHeader, 0));
        assert_eq!(at(1023), (1, Part::PaxHeader, 511));
        assert_eq!(at(1024), (1, Part::PaxRecords, 0));
        assert_eq!(at(2047), (1, Part::PaxRecords, 1023));
        assert_eq!(at(2048), (1, Part::Header, 0));
        assert_eq!(at(2560), (1, Part::Content, 0));
        assert_eq!(at(2570), (1, Part::Padding, 0));
        assert_eq!(at(3072), (2, Part::Header, 0));
    }

    #[test]
    fn impossible_long_entries_are_refused() {
        let sizes = [0u64; 3];
        assert!(OffsetTable::from_sizes(sizes, vec![(2, 1), (1, 1)]).is_none());
        assert!(OffsetTable::from_sizes(sizes, vec![(1, 1), (1, 1)]).is_none());
        assert!(OffsetTable::from_sizes(sizes, vec![(1, 0)]).is_none());
        assert!(OffsetTable::from_sizes(sizes, vec![(3, 1)]).is_none());
        assert!(OffsetTable::from_sizes(sizes, vec![(0, u64::MAX - 100)]).is_none());
        assert!(OffsetTable::from_sizes(sizes, vec![(0, 1), (2, 1)]).is_some());
    }

    #[test]
    fn positions_cover_every_part() {
        let sizes = [0u64, 513, 0];
        let t = OffsetTable::from_sizes(sizes, Vec::new()).unwrap();
        assert_eq!(t.total_size(), 512 + 1536 + 512 + 1024);
        let size = |o: Ordinal| sizes[o.0 as usize];
        let at = |off| t.position(off, size).unwrap();
        assert_eq!(
            at(0),
            Position::Entry {
                ordinal: Ordinal(0),
                part: Part::Header,
                offset_in_part: 0
            }
        );
        assert_eq!(
            at(512 + 512),
            Position::Entry {
                ordinal: Ordinal(1),
                part: Part::Content,
                offset_in_part: 0
            }
        );
        assert_eq!(
            at(512 + 512 + 513),
            Position::Entry {
                ordinal: Ordinal(1),
                part: Part::Padding,
                offset_in_part: 0
            }
        );
        assert_eq!(
            at(2048 + 511),
            Position::Entry {
                ordinal: Ordinal(2),
                part: Part::Header,
                offset_in_part: 511
            }
        );
        assert_eq!(
            at(2560),
            Position::Footer {
                offset_in_footer: 0
            }
        );
        assert_eq!(t.position(t.total_size(), size), None);
        assert_eq!(t.end(Ordinal(2)), t.footer_start());
        assert_eq!(t.end(Ordinal(0)), 512);
    }

    #[test]
    fn impossible_sizes_are_refused() {
        assert!(OffsetTable::from_sizes([u64::MAX - 600], Vec::new()).is_none());
        assert!(
            OffsetTable::from_sizes([1 << 62, 1 << 62, 1 << 62, 1 << 62], Vec::new()).is_none()
        );
    }

    #[test]
    fn empty_table_is_only_a_footer() {
        let t = OffsetTable::from_sizes([], Vec::new()).unwrap();
        assert_eq!(t.total_size(), FOOTER_LEN);
        assert_eq!(t.entry_at(0), None);
    }
}
