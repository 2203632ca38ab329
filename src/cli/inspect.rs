//! The commands that look at a tape without writing it: `verify`, `info`, `ls`, `locate`
//! and `volumes`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Args;

use tartape::manifest::ManifestEntry;
use tartape::tape::EntryLayout;
use tartape::text::{counted, iso8601};
use tartape::volume::VolumeSet;
use tartape::{Error, HashAlgo, Located, Ordinal, Result, Tape, VerifyLevel};

use super::output::{self, Exit, Out};
use super::{CatalogArg, VolumeArgs, parse_offset};

// What `tartape verify` was asked to do.
#[derive(Args)]
pub struct VerifyArgs {
    /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
    dir: PathBuf,
    #[command(flatten)]
    catalog: CatalogArg,
    /// Also re-read every file and compare it with the recorded digest.
    #[arg(long)]
    deep: bool,
    /// One JSON object: intact, entry_count, fingerprint, discrepancies (path, change).
    #[arg(long)]
    json: bool,
}

/// `tartape verify`: 0 when the tape is intact, 1 when it is not (every discrepancy
/// listed), 2 when it could not be checked (no catalog, an unreadable or corrupted one).
pub fn verify(args: VerifyArgs) -> Result<Exit> {
    let level = if args.deep {
        VerifyLevel::Deep
    } else {
        VerifyLevel::Full
    };
    let tape = Tape::open_with(&args.dir, args.catalog.path())?;
    let bar = output::spinner("verifying");
    let found = tape.verify(level);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let found = found?;
    let mut out = Out::stdout();
    if args.json {
        let discrepancies: Vec<serde_json::Value> = found
            .iter()
            .map(|d| serde_json::json!({"path": d.arc_path, "change": d.change}))
            .collect();
        out.json(&serde_json::json!({
            "intact": found.is_empty(),
            "entry_count": tape.entry_count(),
            "fingerprint": tape.fingerprint(),
            "discrepancies": discrepancies,
        }))?;
    } else if found.is_empty() {
        out.line(format_args!(
            "ok: {} entries match the recording ({})",
            tape.entry_count(),
            tape.fingerprint()
        ))?;
    } else {
        // What is wrong is the answer, not success output: listed even with -q.
        let mut list = std::io::stdout().lock();
        for d in &found {
            std::io::Write::write_fmt(&mut list, format_args!("{d}\n"))
                .map_err(output::stdout_error)?;
        }
    }
    out.flush()?;
    if found.is_empty() {
        return Ok(Exit::Success);
    }
    Err(Error::NotIntact {
        root: tape.root().to_path_buf(),
        count: found.len(),
    })
}

// What `tartape info` was asked to do.
#[derive(Args)]
pub struct InfoArgs {
    /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
    dir: PathBuf,
    #[command(flatten)]
    catalog: CatalogArg,
    /// One JSON object.
    #[arg(long)]
    json: bool,
}

/// `tartape info`.
pub fn info(args: InfoArgs) -> Result<Exit> {
    let tape = Tape::open_with(&args.dir, args.catalog.path())?;
    let meta = tape.meta();
    let stats = tape.stats()?;
    let overhead = meta.total_size.saturating_sub(meta.data_size);
    let hash = meta.hash.map_or("none", HashAlgo::name);
    let catalog_path = tape.catalog().path().display().to_string();
    let source = tape.root().display().to_string();
    let mut out = Out::stdout();
    if args.json {
        out.json(&serde_json::json!({
            "fingerprint": meta.fingerprint,
            "total_size": meta.total_size,
            "entry_count": meta.entry_count,
            "files": stats.files,
            "dirs": stats.dirs,
            "symlinks": stats.symlinks,
            "long_entries": stats.long_entries,
            "data_size": meta.data_size,
            "overhead": overhead,
            "created_at": meta.created_at,
            "catalog": catalog_path,
            "source": source,
            "arc_root": String::from_utf8_lossy(&meta.arc_root),
            "anonymize": meta.anonymize,
            "hash": hash,
            "excludes": meta.excludes,
        }))?;
        return Ok(Exit::Success);
    }
    out.line(format_args!("fingerprint: {}", meta.fingerprint))?;
    out.line(format_args!(
        "entries: {} ({}, {}, {})",
        meta.entry_count,
        counted(stats.files, "file", "files"),
        counted(stats.dirs, "directory", "directories"),
        counted(stats.symlinks, "symlink", "symlinks"),
    ))?;
    if stats.long_entries > 0 {
        out.line(format_args!(
            "long entries: {} (with a PAX header)",
            stats.long_entries
        ))?;
    }
    out.line(format_args!("data bytes: {}", meta.data_size))?;
    out.line(format_args!("tape size: {}", meta.total_size))?;
    out.line(format_args!(
        "overhead: {overhead} bytes ({:.2}%)",
        overhead as f64 * 100.0 / meta.total_size as f64
    ))?;
    out.line(format_args!("created at: {}", iso8601(meta.created_at)))?;
    out.line(format_args!("catalog: {catalog_path}"))?;
    out.line(format_args!("source: {source}"))?;
    out.line(format_args!(
        "options: anonymize={} hash={hash} excludes=[{}]",
        meta.anonymize,
        meta.excludes.join(", ")
    ))?;
    Ok(Exit::Success)
}

// What `tartape ls` was asked to do.
#[derive(Args)]
pub struct LsArgs {
    /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
    dir: PathBuf,
    #[command(flatten)]
    catalog: CatalogArg,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `tartape ls`.
pub fn ls(args: LsArgs) -> Result<Exit> {
    let tape = Tape::open_with(&args.dir, args.catalog.path())?;
    let mut out = Out::stdout();
    tape.catalog().for_each_from(Ordinal(0), |e| {
        let path = e.display_path();
        let end = tartape::layout::end_offset(&e);
        if args.json {
            out.json(&serde_json::json!({
                "start_offset": e.start_offset,
                "end_offset": end,
                "kind": e.kind.to_string(),
                "mode": format!("{:04o}", e.mode),
                "size": e.size,
                "path": path,
            }))?;
        } else {
            out.line(format_args!(
                "{:>12} {:>12} {:<7} {:04o} {:>12} {path}",
                e.start_offset, end, e.kind, e.mode, e.size
            ))?;
        }
        Ok(true)
    })?;
    out.flush()?;
    Ok(Exit::Success)
}

// What `tartape locate` was asked to do.
#[derive(Args)]
pub struct LocateArgs {
    /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
    dir: PathBuf,
    /// Archive path of the entry (e.g. `photos/2024/a.jpg`).
    #[arg(required_unless_present = "offset", conflicts_with = "offset")]
    path: Option<OsString>,
    /// A byte offset in the tape (suffixes K, M, G, T: powers of 1024).
    #[arg(long, value_name = "N", value_parser = parse_offset)]
    offset: Option<u64>,
    #[command(flatten)]
    catalog: CatalogArg,
    // With --volume-size: which volumes, and where inside them, hold the entry.
    #[command(flatten)]
    volumes: VolumeArgs,
    /// One JSON object.
    #[arg(long)]
    json: bool,
}

/// `tartape locate DIR PATH` or `tartape locate DIR --offset N`.
pub fn locate(args: LocateArgs) -> Result<Exit> {
    let tape = Tape::open_with(&args.dir, args.catalog.path())?;
    let volumes = args.volumes.volume_set(&tape)?;
    let volumes = volumes.as_ref();
    let mut out = Out::stdout();
    if let Some(offset) = args.offset {
        locate_offset(&tape, offset, volumes, args.json, &mut out)?;
        return Ok(Exit::Success);
    }
    let path = args.path.unwrap_or_default();
    let Some(layout) = tape.locate_path(path.as_bytes())? else {
        return Err(Error::Usage(format!(
            "{}: no such entry in the tape (paths start with the root name, see `tartape ls`)",
            path.to_string_lossy()
        )));
    };
    if args.json {
        out.json(&layout_json(&layout, volumes)?)?;
    } else {
        print_layout(&layout, volumes, &mut out)?;
    }
    Ok(Exit::Success)
}

/// `locate --offset N`: which entry and part cover byte N (and which volume).
fn locate_offset(
    tape: &Tape,
    offset: u64,
    volumes: Option<&VolumeSet>,
    json: bool,
    out: &mut Out,
) -> Result<()> {
    let located = tape.locate(offset)?;
    let in_volume = volumes.map(|v| {
        let part = v.volumes().part_of(offset);
        (v, part, offset - (part - 1) * v.volumes().size())
    });
    if json {
        let mut value = match &located {
            Located::Footer { offset_in_footer } => serde_json::json!({
                "offset": offset, "part": "footer", "offset_in_part": offset_in_footer,
            }),
            Located::Entry {
                layout,
                part,
                offset_in_part,
            } => serde_json::json!({
                "offset": offset,
                "part": part.name(),
                "offset_in_part": offset_in_part,
                "entry": layout_json(layout, volumes)?,
            }),
        };
        if let Some((v, part, at)) = in_volume {
            value["volume"] = serde_json::json!({
                "part": part, "name": v.display_name(part)?, "volume_offset": at,
            });
        }
        return out.json(&value);
    }
    match &located {
        Located::Footer { offset_in_footer } => {
            out.line(format_args!(
                "offset {offset}: footer, byte {offset_in_footer} of 1024"
            ))?;
        }
        Located::Entry {
            layout,
            part,
            offset_in_part,
        } => {
            out.line(format_args!(
                "offset {offset}: {} of {}, byte {offset_in_part}",
                part.name(),
                layout.entry.display_path()
            ))?;
            print_layout(layout, volumes, out)?;
        }
    }
    if let Some((v, part, at)) = in_volume {
        out.line(format_args!(
            "offset {offset}: volume part {part} {}, byte {at}",
            v.display_name(part)?
        ))?;
    }
    Ok(())
}

fn print_layout(l: &EntryLayout, volumes: Option<&VolumeSet>, out: &mut Out) -> Result<()> {
    let e = &l.entry;
    out.line(format_args!(
        "entry: {} ({}, {} bytes, ordinal {})",
        e.display_path(),
        e.kind,
        e.size,
        e.ordinal.0
    ))?;
    if let Some((a, b)) = l.pax {
        out.line(format_args!("pax:     [{a}, {b})  (x header and records)"))?;
    }
    out.line(format_args!("header:  [{}, {})", l.header.0, l.header.1))?;
    out.line(format_args!("content: [{}, {})", l.content.0, l.content.1))?;
    out.line(format_args!("padding: [{}, {})", l.padding.0, l.padding.1))?;
    let Some(v) = volumes else {
        return Ok(());
    };
    out.line(format_args!(
        "volumes: {} of {} bytes",
        v.volumes().count(),
        v.volumes().size()
    ))?;
    for (what, (start, end), source) in [
        ("header: ", (l.start(), l.header.1), false),
        ("content:", l.content, true),
    ] {
        for (s, name) in v.named_slices(start, end)? {
            let within = s.volume_offset;
            let file = if source {
                format!(
                    " = file bytes [{}, {})",
                    s.range_offset,
                    s.range_offset + s.length
                )
            } else {
                String::new()
            };
            out.line(format_args!(
                "{what} part {} {name}: bytes [{within}, {}){file}",
                s.part,
                within + s.length
            ))?;
        }
    }
    Ok(())
}

/// The slices of tape range `[start, end)`, as JSON objects (the Python `FileSlice`; with
/// `source`, where each starts in the file).
fn slices_json(v: &VolumeSet, start: u64, end: u64, source: bool) -> Result<serde_json::Value> {
    let slices: Vec<serde_json::Value> = v
        .named_slices(start, end)?
        .into_iter()
        .map(|(s, name)| {
            let mut value = serde_json::json!({
                "part": s.part,
                "name": name,
                "volume_offset": s.volume_offset,
                "length": s.length,
            });
            if source {
                value["source_offset"] = s.range_offset.into();
            }
            value
        })
        .collect();
    Ok(slices.into())
}

fn layout_json(l: &EntryLayout, volumes: Option<&VolumeSet>) -> Result<serde_json::Value> {
    let e = &l.entry;
    let mut v = serde_json::json!({
        "path": e.display_path(),
        "kind": e.kind.to_string(),
        "size": e.size,
        "ordinal": e.ordinal.0,
        "start_offset": l.start(),
        "end_offset": l.end(),
        "pax": l.pax.map(|(a, b)| [a, b]),
        "header": [l.header.0, l.header.1],
        "content": [l.content.0, l.content.1],
        "padding": [l.padding.0, l.padding.1],
    });
    if let Some(vn) = volumes {
        v["volume_size"] = vn.volumes().size().into();
        v["volume_count"] = vn.volumes().count().into();
        v["header_slices"] = slices_json(vn, l.start(), l.header.1, false)?;
        v["slices"] = slices_json(vn, l.content.0, l.content.1, true)?;
    }
    Ok(v)
}

// What `tartape volumes` was asked to do.
#[derive(Args)]
pub struct VolumesArgs {
    /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
    dir: PathBuf,
    #[command(flatten)]
    catalog: CatalogArg,
    #[command(flatten)]
    volumes: VolumeArgs,
    /// List the entries of volume K (1 = the first) instead of the volumes.
    #[arg(long, value_name = "K", requires = "volume_size")]
    volume: Option<u64>,
    /// One JSON object per line (volumes: keys part, name, start, end, size, first_entry,
    /// last_entry; entries of a volume: part, path, kind, size, state, start_offset,
    /// end_offset, volume_start, volume_end, content).
    #[arg(long)]
    json: bool,
}

/// `tartape volumes`: every volume with its window and the first and last entry it
/// touches; with `--volume K`, the entries of volume K.
pub fn volumes(args: VolumesArgs) -> Result<Exit> {
    let tape = Tape::open_with(&args.dir, args.catalog.path())?;
    let Some(v) = args.volumes.volume_set(&tape)? else {
        return Err(Error::Usage(
            "tartape volumes needs --volume-size SIZE (e.g. 2G)".into(),
        ));
    };
    let mut out = Out::stdout();
    if let Some(part) = args.volume {
        volume_entries(&tape, &v, part, args.json, &mut out)?;
        out.flush()?;
        return Ok(Exit::Success);
    }
    let entry_name = |ordinal: Option<Ordinal>| -> Result<Option<String>> {
        ordinal
            .map(|o| Ok(tape.catalog().entry(o)?.display_path()))
            .transpose()
    };
    for part in 1..=v.volumes().count() {
        let (start, end) = v.volumes().window_of(part)?;
        let name = v.display_name(part)?;
        let manifest = tape.manifest(start, end);
        let first = entry_name(manifest.first())?;
        let last = entry_name(manifest.last())?;
        if args.json {
            out.json(&serde_json::json!({
                "part": part, "name": name, "start": start, "end": end, "size": end - start,
                "first_entry": first, "last_entry": last,
            }))?;
        } else {
            let shown = |e: Option<String>| e.unwrap_or_else(|| "(footer)".into());
            out.line(format_args!(
                "{part:>w$} {name} {start:>14} {end:>14} {:>12} {} .. {}",
                end - start,
                shown(first),
                shown(last),
                w = v.volumes().pindex_width()
            ))?;
        }
    }
    out.flush()?;
    Ok(Exit::Success)
}

/// `tartape volumes --volume K`: the manifest of volume K.
fn volume_entries(tape: &Tape, v: &VolumeSet, part: u64, json: bool, out: &mut Out) -> Result<()> {
    let (start, end) = v.volumes().window_of(part)?;
    let manifest = tape.manifest(start, end);
    manifest.entries(tape.catalog(), |item: ManifestEntry| {
        let e = &item.entry;
        let entry_end = tartape::layout::end_offset(e);
        if json {
            let content = item.content.map(|c| {
                serde_json::json!({
                    "volume_offset": c.window_offset,
                    "length": c.length,
                    "source_offset": c.source_offset,
                })
            });
            out.json(&serde_json::json!({
                "part": part,
                "path": e.display_path(),
                "kind": e.kind.to_string(),
                "size": e.size,
                "state": item.state.name(),
                "start_offset": e.start_offset,
                "end_offset": entry_end,
                "volume_start": item.local.0,
                "volume_end": item.local.1,
                "content": content,
            }))?;
        } else {
            let content = item.content.map_or(String::new(), |c| {
                format!(
                    " = file bytes [{}, {})",
                    c.source_offset,
                    c.source_offset + c.length
                )
            });
            out.line(format_args!(
                "{:<8} [{:>12}, {:>12}) {}{content}",
                item.state.name(),
                item.local.0,
                item.local.1,
                e.display_path()
            ))?;
        }
        Ok(true)
    })
}
