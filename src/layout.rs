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

/// Header + content + padding.
pub fn footprint(size: u64) -> u64 {
    BLOCK + size + padding(size)
}

/// Offset one past an entry's last byte (header + content + padding).
pub fn end_offset(entry: &Entry) -> u64 {
    entry.start_offset + footprint(entry.size)
}

/// The parts of a tape a byte can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Header,
    Content,
    Padding,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
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
        ordinal: Ordinal,
        part: Part,
        offset_in_part: u64,
    },
    /// Inside the 1024-byte footer.
    Footer { offset_in_footer: u64 },
}

/// The start offset of every entry, in tape order, plus the tape's total size.
///
/// Invariant: `starts` is strictly increasing, `starts[0] == 0` when non-empty, and every
/// gap is a footprint; `total_size = last start + last footprint + FOOTER_LEN`. The catalog
/// checks this on open, so lookups here never fail for offsets below `total_size`.
#[derive(Debug, Clone)]
pub struct OffsetTable {
    starts: Vec<u64>,
    total_size: u64,
}

impl OffsetTable {
    /// Builds the table from entry sizes in tape order; `None` when the tape would be
    /// larger than 2^64 bytes (only a corrupted catalog can say so).
    pub fn from_sizes(sizes: impl IntoIterator<Item = u64>) -> Option<OffsetTable> {
        let mut starts = Vec::new();
        let mut offset: u64 = 0;
        for size in sizes {
            starts.push(offset);
            let fp = size.checked_add(BLOCK + padding(size))?;
            offset = offset.checked_add(fp)?;
        }
        Some(OffsetTable {
            starts,
            total_size: offset.checked_add(FOOTER_LEN)?,
        })
    }

    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

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
        let (part, offset_in_part) = if within < BLOCK {
            (Part::Header, within)
        } else if within < BLOCK + size {
            (Part::Content, within - BLOCK)
        } else {
            (Part::Padding, within - BLOCK - size)
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
        assert_eq!(footprint(0), 512);
        assert_eq!(footprint(1), 1024);
        assert_eq!(footprint(511), 1024);
        assert_eq!(footprint(512), 1024);
        assert_eq!(footprint(513), 1536);
        assert_eq!(padding(513), 511);
    }

    #[test]
    fn positions_cover_every_part() {
        let sizes = [0u64, 513, 0];
        let t = OffsetTable::from_sizes(sizes).unwrap();
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
        assert!(OffsetTable::from_sizes([u64::MAX - 600]).is_none());
        assert!(OffsetTable::from_sizes([1 << 62, 1 << 62, 1 << 62, 1 << 62]).is_none());
    }

    #[test]
    fn empty_table_is_only_a_footer() {
        let t = OffsetTable::from_sizes([]).unwrap();
        assert_eq!(t.total_size(), FOOTER_LEN);
        assert_eq!(t.entry_at(0), None);
    }
}
