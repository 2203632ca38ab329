//! How an object is cut into the parts of a multipart upload (SPEC §9): every part the
//! same size but the last (Cloudflare R2's rule), at most 10,000 parts of 5 MiB to 5 GiB.
//! Pure arithmetic.

use crate::error::{Error, Result};

/// The smallest part S3 takes (but the last).
pub const MIN_PART: u64 = 5 << 20;
/// The largest part S3 takes, and the largest single PUT.
pub const MAX_PART: u64 = 5 << 30;
/// Parts of one upload, at most.
pub const MAX_PARTS: u64 = 10_000;
/// The default part size is a multiple of this…
const STEP: u64 = 8 << 20;
/// …and at least this.
const DEFAULT_MIN: u64 = 16 << 20;

/// An object of `total` bytes cut into parts of `part_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    total: u64,
    part_size: u64,
}

impl Plan {
    /// The plan for `total` bytes with parts of `part_size` (the default when `None`):
    /// a size out of S3's range, or one that would need more than 10,000 parts, is
    /// refused, naming the smallest size that works.
    pub fn new(total: u64, part_size: Option<u64>) -> Result<Plan> {
        let part_size = match part_size {
            None => default_part_size(total)?,
            Some(size) => {
                if !(MIN_PART..=MAX_PART).contains(&size) {
                    return Err(Error::Usage(format!(
                        "--part-size {size}: S3 takes parts of 5 MiB (5242880) to 5 GiB \
                         (5368709120)"
                    )));
                }
                if total.div_ceil(size) > MAX_PARTS {
                    let smallest = smallest_part_size(total)?;
                    return Err(Error::Usage(format!(
                        "--part-size {size}: {total} bytes would take {} parts, more than \
                         the 10,000 S3 allows; the smallest part size that works is \
                         {smallest} bytes (--part-size {}M)",
                        total.div_ceil(size),
                        smallest >> 20
                    )));
                }
                size
            }
        };
        Ok(Plan { total, part_size })
    }

    /// The object's size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes of every part but the last.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// How many parts (1 for an empty object).
    pub fn count(&self) -> u32 {
        self.total.div_ceil(self.part_size).max(1) as u32
    }

    /// Whether the object goes in one PUT rather than a multipart upload.
    pub fn single(&self) -> bool {
        self.total <= self.part_size
    }

    /// Bytes `[start, end)` of the object that part `number` (from 1) holds.
    pub fn range(&self, number: u32) -> (u64, u64) {
        let start = (u64::from(number) - 1) * self.part_size;
        (start, (start + self.part_size).min(self.total))
    }

    /// The size of part `number`.
    pub fn size_of(&self, number: u32) -> u64 {
        let (start, end) = self.range(number);
        end - start
    }
}

/// The default part size (SPEC §9): the smallest multiple of 8 MiB, at least 16 MiB,
/// that keeps `total` within 10,000 parts.
pub fn default_part_size(total: u64) -> Result<u64> {
    let needed = total.div_ceil(MAX_PARTS).div_ceil(STEP) * STEP;
    let size = needed.max(DEFAULT_MIN);
    if size > MAX_PART {
        return Err(too_large(total));
    }
    Ok(size)
}

/// The smallest part size (a whole number of MiB, at least 5 MiB) that keeps `total`
/// within 10,000 parts.
fn smallest_part_size(total: u64) -> Result<u64> {
    let size = (total.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20).max(MIN_PART);
    if size > MAX_PART {
        return Err(too_large(total));
    }
    Ok(size)
}

fn too_large(total: u64) -> Error {
    Error::Usage(format!(
        "{total} bytes do not fit one S3 object (10,000 parts of 5 GiB at most); cut the \
         tape into volumes with --volume-size"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn default_parts_are_multiples_of_8_mib_from_16_mib_within_10000() {
        assert_eq!(default_part_size(1).unwrap(), 16 * MIB);
        assert_eq!(default_part_size(10_000 * 16 * MIB).unwrap(), 16 * MIB);
        assert_eq!(default_part_size(10_000 * 16 * MIB + 1).unwrap(), 24 * MIB);
        // 1 TiB: 104,858 bytes a part at least → 112 MiB.
        let tib = 1u64 << 40;
        let size = default_part_size(tib).unwrap();
        assert_eq!(size, 112 * MIB);
        assert!(tib.div_ceil(size) <= MAX_PARTS);
        assert!(tib.div_ceil(size - STEP) > MAX_PARTS);
        assert!(default_part_size(MAX_PARTS * MAX_PART + 1).is_err());
    }

    #[test]
    fn parts_are_equal_but_the_last() {
        let p = Plan::new(40 * MIB + 5, None).unwrap();
        assert_eq!((p.part_size(), p.count()), (16 * MIB, 3));
        assert_eq!(p.range(1), (0, 16 * MIB));
        assert_eq!(p.range(3), (32 * MIB, 40 * MIB + 5));
        assert_eq!(p.size_of(3), 8 * MIB + 5);
        assert!(!p.single());
        let one = Plan::new(16 * MIB, None).unwrap();
        assert!(one.single());
        assert_eq!((one.count(), one.range(1)), (1, (0, 16 * MIB)));
        assert_eq!(Plan::new(0, None).unwrap().count(), 1);
    }

    #[test]
    fn sizes_out_of_range_or_too_small_name_what_works() {
        for bad in [MIN_PART - 1, MAX_PART + 1] {
            let e = Plan::new(100, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("5 MiB") && e.contains("5 GiB"), "{e}");
        }
        let total = 10_001 * MIN_PART;
        let e = Plan::new(total, Some(MIN_PART)).unwrap_err().to_string();
        assert!(e.contains("10001 parts"), "{e}");
        assert!(e.contains("--part-size 6M"), "{e}");
        assert!(Plan::new(total, Some(6 * MIB)).is_ok());
        assert!(Plan::new(10_000 * MIN_PART, Some(MIN_PART)).is_ok());
    }
}
