//! Volumes (SPEC §8): a tape cut into windows of a fixed size, named as the Python tartape
//! 3.0.3 names them. Pure arithmetic and formatting; a volume's bytes are the tape's bytes
//! in its window ([`Tape::read_at`](crate::tape::Tape::read_at)), so every guarantee of the
//! tape holds for a volume unchanged.

use std::fmt::Write as _;

use crate::catalog::TapeMeta;
use crate::error::{Error, Result};
use crate::header::BLOCK;

/// The Python tartape's default volume name.
pub const DEFAULT_TEMPLATE: &str = "{name}_{fingerprint:.8}.tar.{pindex}";

/// Parses a size: a number of bytes with an optional binary suffix (`K` = 1024, `M`, `G`,
/// `T`, `P`; `KB`, `KiB` and lower case too). `what` names the option in errors.
pub fn parse_size(text: &str, what: &str) -> Result<u64> {
    let bad = |why: &str| Error::Usage(format!("{what} {text:?}: {why}"));
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(bad(
            "not a size (a whole number of bytes, optionally with K, M, G, T or P = powers of 1024)",
        ));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => {
            return Err(bad(
                "unknown suffix (use K, M, G, T or P, powers of 1024, or none for bytes)",
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| bad("too large"))
}

/// Parses a volume size: a size (see [`parse_size`]) that is a positive multiple of 512.
pub fn parse_volume_size(text: &str) -> Result<u64> {
    let size = parse_size(text, "--volume-size")?;
    if size == 0 {
        return Err(Error::Usage(format!(
            "--volume-size {text:?}: must be at least 512 bytes"
        )));
    }
    if !size.is_multiple_of(BLOCK) {
        let below = size / BLOCK * BLOCK;
        let above = below + BLOCK;
        let near = if below == 0 {
            format!("{above}")
        } else {
            format!("{below} or {above}")
        };
        return Err(Error::Usage(format!(
            "--volume-size {text:?} is {size} bytes, not a multiple of 512 (the tar block); \
             the nearest are {near}"
        )));
    }
    Ok(size)
}

/// A tape of `total` bytes cut into volumes of `size` bytes: volume k (1-based) is tape
/// bytes `[(k−1)·size, min(k·size, total))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volumes {
    size: u64,
    total: u64,
}

impl Volumes {
    /// `size` must be a positive multiple of 512 ([`parse_volume_size`]).
    pub fn new(size: u64, total: u64) -> Result<Volumes> {
        if size == 0 || !size.is_multiple_of(BLOCK) {
            return Err(Error::Usage(format!(
                "volume size {size} is not a positive multiple of 512"
            )));
        }
        Ok(Volumes { size, total })
    }

    /// Bytes per volume, a multiple of 512; the last volume may hold fewer.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of the whole tape being cut.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of volumes, ⌈total / size⌉.
    pub fn count(&self) -> u64 {
        self.total.div_ceil(self.size)
    }

    /// Tape window `[start, end)` of volume `part` (1-based), or `None` past the last.
    pub fn window(&self, part: u64) -> Option<(u64, u64)> {
        if part == 0 || part > self.count() {
            return None;
        }
        let start = (part - 1) * self.size;
        Some((start, (start + self.size).min(self.total)))
    }

    /// Checked [`Volumes::window`]: a usage error naming the valid range.
    pub fn window_of(&self, part: u64) -> Result<(u64, u64)> {
        self.window(part).ok_or_else(|| {
            Error::Usage(format!(
                "--volume {part}: the tape has {} volumes of {} bytes (1 to {})",
                self.count(),
                self.size,
                self.count()
            ))
        })
    }

    /// Tape range `[start, end)` of bytes `[offset, offset + length)` of volume `part`
    /// (to the volume's end when `length` is `None`, and never past it): what `stream
    /// --volume K --offset N --length L` writes.
    pub fn range_in(&self, part: u64, offset: u64, length: Option<u64>) -> Result<(u64, u64)> {
        let (start, end) = self.window_of(part)?;
        if offset > end - start {
            return Err(Error::Usage(format!(
                "--offset {offset} is past the end of volume {part} ({} bytes)",
                end - start
            )));
        }
        let left = end - start - offset;
        let length = length.map_or(left, |l| l.min(left));
        Ok((start + offset, start + offset + length))
    }

    /// The volume (1-based) holding tape byte `offset`.
    pub fn part_of(&self, offset: u64) -> u64 {
        offset / self.size + 1
    }

    /// The pieces of tape range `[start, end)`, one per volume it crosses.
    pub fn slices(&self, start: u64, end: u64) -> Vec<Slice> {
        let mut out = Vec::new();
        let mut pos = start;
        while pos < end.min(self.total) {
            let part = self.part_of(pos);
            let vol_end = (part * self.size).min(end).min(self.total);
            out.push(Slice {
                part,
                volume_offset: pos - (part - 1) * self.size,
                length: vol_end - pos,
                range_offset: pos - start,
            });
            pos = vol_end;
        }
        out
    }

    /// Width of `{pindex}`: max(3, digits of the volume count), as the Python tartape.
    pub fn pindex_width(&self) -> usize {
        self.count().to_string().len().max(3)
    }
}

/// A tape's volumes with their names: what `tartape volumes` lists, a volume mount
/// holds, and every front end that sends or serves volumes names them by.
#[derive(Debug, Clone)]
pub struct VolumeSet {
    volumes: Volumes,
    template: NameTemplate,
    /// The tape's root name.
    name: Vec<u8>,
    fingerprint: String,
}

impl VolumeSet {
    /// The tape of `meta` cut into volumes of `size` bytes, named by `template`.
    pub fn new(meta: &TapeMeta, size: u64, template: NameTemplate) -> Result<VolumeSet> {
        Ok(VolumeSet {
            volumes: Volumes::new(size, meta.total_size)?,
            template,
            name: meta.arc_root.clone(),
            fingerprint: meta.fingerprint.clone(),
        })
    }

    /// The volumes' windows.
    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// The file name of volume `part` (1-based).
    pub fn name(&self, part: u64) -> Result<Vec<u8>> {
        self.template
            .render(&self.name, &self.fingerprint, &self.volumes, part)
    }

    /// [`VolumeSet::name`] for text and JSON (non-UTF-8 bytes replaced).
    pub fn display_name(&self, part: u64) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.name(part)?).into_owned())
    }

    /// The name of the catalog copy that goes with the volumes, `<name>_<fp8>.tartape`.
    pub fn catalog_copy_name(&self) -> Vec<u8> {
        catalog_copy_name(&self.name, &self.fingerprint)
    }

    /// The slices of tape range `[start, end)`, one per volume it crosses, each with its
    /// volume's name.
    pub fn named_slices(&self, start: u64, end: u64) -> Result<Vec<(Slice, String)>> {
        self.volumes
            .slices(start, end)
            .into_iter()
            .map(|s| Ok((s, self.display_name(s.part)?)))
            .collect()
    }
}

/// A piece of a tape range inside one volume (the Python `FileSlice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The volume, 1-based.
    pub part: u64,
    /// Where the piece starts inside the volume file.
    pub volume_offset: u64,
    /// Bytes in the piece; never past the end of its volume.
    pub length: u64,
    /// Where the piece starts inside the range (for content: the offset in the file).
    pub range_offset: u64,
}

/// One `{…}` of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Name(Option<usize>),
    Fingerprint(Option<usize>),
    Index,
    Part,
    Pindex,
    Total,
}

/// A volume name template (`--volume-name`), in the Python `str.format` syntax the Python
/// tartape uses: `{name}`, `{fingerprint}`, `{fingerprint:.N}` (its first N characters),
/// `{index}` (k−1), `{part}` (k), `{pindex}` (k zero-padded), `{total}`; `{{` and `}}` are
/// literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    pieces: Vec<Piece>,
}

impl Default for NameTemplate {
    fn default() -> Self {
        NameTemplate::parse(DEFAULT_TEMPLATE).expect("the default template parses")
    }
}

impl NameTemplate {
    /// Parses a `--volume-name` template. A usage error names the problem: an unknown
    /// field, a lone brace, a format on a number, or no `{pindex}`, `{part}` or `{index}`
    /// (every volume would get the same name).
    pub fn parse(template: &str) -> Result<NameTemplate> {
        let bad = |why: String| Error::Usage(format!("--volume-name {template:?}: {why}"));
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut rest = template;
        let mut has_part = false;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("{{") || rest.starts_with("}}") {
                text.push(c as u8);
                rest = &rest[2..];
                continue;
            }
            if c == '}' {
                return Err(bad("a single `}` (write `}}` for a brace)".into()));
            }
            if c != '{' {
                text.extend_from_slice(&rest.as_bytes()[..c.len_utf8()]);
                rest = &rest[c.len_utf8()..];
                continue;
            }
            let close = rest
                .find('}')
                .ok_or_else(|| bad("a `{` without its `}`".into()))?;
            let field = &rest[1..close];
            rest = &rest[close + 1..];
            let (key, spec) = match field.split_once(':') {
                Some((k, s)) => (k, Some(s)),
                None => (field, None),
            };
            let precision = match spec {
                None => None,
                Some(s) => Some(
                    s.strip_prefix('.')
                        .and_then(|n| n.parse::<usize>().ok())
                        .ok_or_else(|| {
                            bad(format!(
                                "`{{{field}}}`: only `:.N` (first N characters) is supported"
                            ))
                        })?,
                ),
            };
            let piece = match (key, precision) {
                ("name", p) => Piece::Name(p),
                ("fingerprint", p) => Piece::Fingerprint(p),
                ("index", None) => Piece::Index,
                ("part", None) => Piece::Part,
                ("pindex", None) => Piece::Pindex,
                ("total", None) => Piece::Total,
                ("index" | "part" | "pindex" | "total", Some(_)) => {
                    return Err(bad(format!("`{{{field}}}` takes no format")));
                }
                _ => {
                    return Err(bad(format!(
                        "unknown field `{{{key}}}` (known: name, fingerprint, index, part, pindex, total)"
                    )));
                }
            };
            has_part |= matches!(piece, Piece::Index | Piece::Part | Piece::Pindex);
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !has_part {
            return Err(bad(
                "names every volume alike: use {pindex}, {part} or {index}".into(),
            ));
        }
        Ok(NameTemplate { pieces })
    }

    /// The name of volume `part` of `volumes`, for the tape named `name` (its root name)
    /// with fingerprint `fingerprint`. Fails when the result is not a single file name.
    pub fn render(
        &self,
        name: &[u8],
        fingerprint: &str,
        volumes: &Volumes,
        part: u64,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(48);
        let cut = |s: &[u8], p: Option<usize>| -> Vec<u8> {
            // Python cuts characters, not bytes; names are bytes here, so cut on a
            // character boundary when the text is UTF-8.
            match (p, std::str::from_utf8(s)) {
                (None, _) => s.to_vec(),
                (Some(n), Ok(text)) => text.chars().take(n).collect::<String>().into_bytes(),
                (Some(n), Err(_)) => s[..n.min(s.len())].to_vec(),
            }
        };
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Name(p) => out.extend(cut(name, *p)),
                Piece::Fingerprint(p) => out.extend(cut(fingerprint.as_bytes(), *p)),
                Piece::Index => {
                    let _ = write!(Bytes(&mut out), "{}", part - 1);
                }
                Piece::Part => {
                    let _ = write!(Bytes(&mut out), "{part}");
                }
                Piece::Pindex => {
                    let _ = write!(Bytes(&mut out), "{part:0w$}", w = volumes.pindex_width());
                }
                Piece::Total => {
                    let _ = write!(Bytes(&mut out), "{}", volumes.count());
                }
            }
        }
        // (A part number is always in it: it is never empty, `.` or `..`.)
        if out.contains(&b'/') || out.contains(&0) || out.len() > 255 {
            return Err(Error::Usage(format!(
                "volume name {:?} is not a single file name (no '/' or NUL, at most 255 bytes)",
                String::from_utf8_lossy(&out)
            )));
        }
        Ok(out)
    }
}

/// `fmt::Write` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The name of the catalog copy a volume mount holds: `<name>_<fp8>.tartape`.
pub fn catalog_copy_name(name: &[u8], fingerprint: &str) -> Vec<u8> {
    let mut out = name.to_vec();
    out.push(b'_');
    out.extend_from_slice(&fingerprint.as_bytes()[..fingerprint.len().min(8)]);
    out.extend_from_slice(b".tartape");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        for (text, n) in [
            ("512", 512),
            ("64K", 65536),
            ("64k", 65536),
            ("1M", 1 << 20),
            ("2G", 1 << 31),
            ("2GiB", 1 << 31),
            ("1T", 1 << 40),
            ("3KB", 3072),
            ("1P", 1 << 50),
            ("1pib", 1 << 50),
        ] {
            assert_eq!(parse_size(text, "--x").unwrap(), n, "{text}");
        }
        for bad in [
            "",
            "K",
            "1.5G",
            "1X",
            "-1",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(parse_size(bad, "--x").is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_sizes_are_multiples_of_512_with_the_nearest_named() {
        assert_eq!(parse_volume_size("1M").unwrap(), 1 << 20);
        let e = parse_volume_size("1000").unwrap_err().to_string();
        assert!(e.contains("512 or 1024"), "{e}");
        let e = parse_volume_size("100").unwrap_err().to_string();
        assert!(e.contains("nearest are 512"), "{e}");
        assert!(parse_volume_size("0").is_err());
    }

    #[test]
    fn windows_cover_the_tape_and_the_last_is_short() {
        let v = Volumes::new(1024, 3584).unwrap();
        assert_eq!((v.size(), v.total(), v.count()), (1024, 3584, 4));
        assert_eq!(v.window(1), Some((0, 1024)));
        assert_eq!(v.window(4), Some((3072, 3584)));
        assert_eq!(v.window(0), None);
        assert_eq!(v.window(5), None);
        assert!(v.window_of(5).unwrap_err().to_string().contains("1 to 4"));
        let exact = Volumes::new(512, 2048).unwrap();
        assert_eq!(exact.count(), 4);
        assert_eq!(exact.window(4), Some((1536, 2048)));
        assert_eq!(v.part_of(0), 1);
        assert_eq!(v.part_of(1023), 1);
        assert_eq!(v.part_of(1024), 2);
    }

    #[test]
    fn slices_split_a_range_at_volume_boundaries() {
        let v = Volumes::new(1024, 10_240).unwrap();
        assert_eq!(
            v.slices(1000, 2100),
            vec![
                Slice {
                    part: 1,
                    volume_offset: 1000,
                    length: 24,
                    range_offset: 0
                },
                Slice {
                    part: 2,
                    volume_offset: 0,
                    length: 1024,
                    range_offset: 24
                },
                Slice {
                    part: 3,
                    volume_offset: 0,
                    length: 52,
                    range_offset: 1048
                },
            ]
        );
        assert!(v.slices(5, 5).is_empty());
        assert_eq!(v.slices(10_000, 20_000).len(), 1);
    }

    #[test]
    fn names_follow_the_python_default_and_templates() {
        let fp = "1a2b3c4d5e6f";
        let v = Volumes::new(512, 512 * 7).unwrap();
        let t = NameTemplate::default();
        assert_eq!(
            t.render(b"photos", fp, &v, 7).unwrap(),
            b"photos_1a2b3c4d.tar.007"
        );
        let many = Volumes::new(512, 512 * 1001).unwrap();
        assert_eq!(
            t.render(b"p", fp, &many, 12).unwrap(),
            b"p_1a2b3c4d.tar.0012"
        );
        let custom =
            NameTemplate::parse("{{x}}-{name:.2}-{fingerprint}-{index}-{part}of{total}").unwrap();
        assert_eq!(
            custom.render(b"photos", fp, &v, 3).unwrap(),
            b"{x}-ph-1a2b3c4d5e6f-2-3of7"
        );
        for bad in [
            "{name}",
            "{pindex",
            "{nope}{part}",
            "{part:03}",
            "a}{part}",
            "{name:x}{part}",
        ] {
            assert!(NameTemplate::parse(bad).is_err(), "{bad}");
        }
        let trailing = NameTemplate::parse("{part}.tar").unwrap();
        assert_eq!(trailing.render(b"p", fp, &v, 2).unwrap(), b"2.tar");
        let e = NameTemplate::parse("{part:.2}").unwrap_err().to_string();
        assert!(e.contains("takes no format"), "{e}");
        let e = NameTemplate::parse("{nope}{part}").unwrap_err().to_string();
        assert!(e.contains("unknown field `{nope}`"), "{e}");
        for bad in [
            "a/{part}",
            "{part}\0",
            &format!("{}{{part}}", "x".repeat(255)),
        ] {
            let t = NameTemplate::parse(bad).unwrap();
            assert!(t.render(b"p", fp, &v, 1).is_err(), "{bad:?}");
        }
        let longest = format!("{}{{part}}", "x".repeat(254));
        let t = NameTemplate::parse(&longest).unwrap();
        assert_eq!(t.render(b"p", fp, &v, 1).unwrap().len(), 255);
        assert_eq!(catalog_copy_name(b"photos", fp), b"photos_1a2b3c4d.tartape");
    }
}
