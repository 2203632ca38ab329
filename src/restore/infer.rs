//! Which volume size cut the volumes a restore is given, when `--volume-size` does not
//! say: from the files in a folder (their names and sizes, and the bytes of a few), or
//! from an object store (the first volume's metadata).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::source::{Namer, lossy};
use crate::catalog::Catalog;
use crate::entry::Ordinal;
use crate::error::{Error, Result};
use crate::header::{BLOCK, Head};
use crate::s3::{ObjectStore, S3Url, VOLUME_META};

use crate::volume::Volumes;

/// Works out the volume size from the volume files in `place`: every size that one of
/// them implies (its own, or — were it the last — what the others would be), kept when the
/// files with the names it gives have the sizes it gives. Ambiguity is an error that asks
/// for `--volume-size`.
pub(super) fn infer_volumes(place: &Path, catalog: &Catalog, names: &Namer) -> Result<Volumes> {
    let total = catalog.meta().total_size;
    let mut files: Vec<(Vec<u8>, u64)> = Vec::new();
    for item in std::fs::read_dir(place).map_err(|e| Error::io(place, e))? {
        let item = item.map_err(|e| Error::io(place, e))?;
        let Ok(st) = item.metadata() else { continue };
        if st.is_file() && st.len() > 0 && st.len().is_multiple_of(BLOCK) && st.len() <= total {
            files.push((item.file_name().as_bytes().to_vec(), st.len()));
        }
    }
    // Digit runs of a name: the part number is one of them (or one less, for {index}).
    let numbers = |name: &[u8]| -> Vec<u64> {
        name.split(|b| !b.is_ascii_digit())
            .filter(|run| !run.is_empty() && run.len() < 19)
            .filter_map(|run| std::str::from_utf8(run).ok()?.parse::<u64>().ok())
            .flat_map(|n| [n, n + 1])
            .filter(|&k| k >= 1)
            .collect()
    };
    let mut candidates = BTreeSet::new();
    for (name, len) in &files {
        candidates.insert(*len);
        for k in numbers(name) {
            if k >= 2 && (total - len).is_multiple_of(k - 1) {
                let size = (total - len) / (k - 1);
                if size >= *len && size.is_multiple_of(BLOCK) {
                    candidates.insert(size);
                }
            }
        }
    }
    // For each candidate size: how many files are named and sized as its volumes, and
    // whether their bytes say otherwise (a header or the footer where that size puts one).
    let mut fits: Vec<((usize, usize), Volumes)> = Vec::new();
    for size in candidates {
        let Ok(volumes) = Volumes::new(size, total) else {
            continue;
        };
        let (mut matched, mut verified) = (0usize, 0usize);
        let mut contradicted = false;
        for (name, len) in &files {
            for k in numbers(name) {
                let Some((start, end)) = volumes.window(k) else {
                    continue;
                };
                if names.name(&volumes, k).is_ok_and(|n| n == *name) {
                    if *len != end - start {
                        contradicted = true;
                    } else {
                        matched += 1;
                        // The bytes of a few say enough (and a thousand opens cost 30 ms).
                        if matched <= 8 {
                            verified += usize::from(fits_bytes(place, name, catalog, start, end));
                        }
                    }
                    break;
                }
            }
        }
        if matched > 0 && !contradicted {
            fits.push(((verified, matched), volumes));
        }
    }
    // Most files whose bytes agree first (a damaged volume keeps the size it has), then
    // most files named and sized alike.
    fits.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    match fits.as_slice() {
        [] => Err(Error::Usage(format!(
            "{}: no volume file of this tape here (names like {}); give the folder that \
             holds them, or --volume-size and --volume-name if they were cut differently",
            place.display(),
            lossy(
                &names
                    .name(&Volumes::new(total, total)?, 1)
                    .unwrap_or_else(|_| b"?".to_vec())
            )
        ))),
        [(_, v)] => Ok(*v),
        [(a, v), (b, _), ..] if a > b => Ok(*v),
        _ => Err(Error::Usage(format!(
            "{}: the volume files here fit more than one volume size ({}); say which with \
             --volume-size",
            place.display(),
            fits.iter()
                .map(|(_, v)| v.size().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

/// Whether the volume file `name` in `place` can be tape bytes `[start, end)`: the first
/// header that starts (whole) in that window is there, or, with no header in it, the
/// footer's zeros are. A file that cannot be read says nothing against it.
fn fits_bytes(place: &Path, name: &[u8], catalog: &Catalog, start: u64, end: u64) -> bool {
    let Ok(file) = File::open(place.join(std::ffi::OsStr::from_bytes(name))) else {
        return true;
    };
    let offsets = catalog.offsets();
    let footer = offsets.footer_start();
    let first = match offsets.entry_at(start) {
        Some(o) if offsets.start(o) < start => Ordinal(o.0 + 1),
        Some(o) => o,
        None => Ordinal(offsets.len() as u64),
    };
    if first.0 < offsets.len() as u64 && offsets.start(first) + BLOCK <= end {
        let at = offsets.start(first);
        let Ok(entry) = catalog.entry(first) else {
            return true;
        };
        // As much of its head as the window holds: a long entry's `x` header alone says
        // little (no path), its records name it.
        let head = Head::for_entry(&entry);
        let want = &head.as_bytes()[..head.byte_len().min(end - at) as usize];
        let mut got = vec![0u8; want.len()];
        return file.read_exact_at(&mut got, at - start).is_err() || got == want;
    }
    let mut got = [0u8; BLOCK as usize];
    if footer >= start && footer + BLOCK <= end {
        return file.read_exact_at(&mut got, footer - start).is_err() || got == [0u8; 512];
    }
    true
}

/// The volumes under the prefix `url` in a store: the first volume is found under the
/// names that volume counts of every width give it (`.001` up to `.0000001`), and its
/// metadata (`K/N`, written by `tartape upload`) or its size says how the tape was cut.
pub(super) fn infer_remote_volumes(
    store: &dyn ObjectStore,
    url: &S3Url,
    total: u64,
    names: &Namer,
) -> Result<Volumes> {
    let mut tried = Vec::new();
    // A volume count of each width: 1, 1,000, 10,000, … (pindex is at least 3 digits).
    for count in [1u64, 1_000, 10_000, 100_000, 1_000_000] {
        // A size that gives at least `count` volumes (rounded down to a block).
        let Ok(probe) = Volumes::new(total / count / BLOCK * BLOCK, total) else {
            continue;
        };
        let name = lossy(&names.name(&probe, 1)?);
        if tried.contains(&name) {
            continue;
        }
        let key = url.child(&name);
        let Some(info) = store.head(&key)? else {
            tried.push(name);
            continue;
        };
        let n = info
            .meta
            .get(VOLUME_META)
            .and_then(|v| v.split_once('/'))
            .and_then(|(k, n)| (k == "1").then(|| n.parse::<u64>().ok()).flatten());
        let size = match n {
            Some(1) => total,
            _ => info.size,
        };
        let volumes = Volumes::new(size, total).map_err(|_| Error::Volume {
            path: url.child(&name).into(),
            problem: format!("{} bytes: not a volume of this tape", info.size),
        })?;
        if n.is_some_and(|n| n != volumes.count()) || lossy(&names.name(&volumes, 1)?) != name {
            return Err(Error::Volume {
                path: url.child(&name).into(),
                problem: format!(
                    "{} bytes: not the first of this tape's volumes (say --volume-size)",
                    info.size
                ),
            });
        }
        return Ok(volumes);
    }
    Err(Error::Usage(format!(
        "{url}: no first volume of this tape there (looked for {}); give the prefix that \
         holds them, or --volume-size and --volume-name if they were cut differently",
        tried.join(", ")
    )))
}
