//! `tartape record`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use tartape::{HashAlgo, RecordSummary, Result, TapeRecorder};

use super::CatalogArg;
use super::output::{self, Exit, Out};

// What `tartape record` was asked to do. (Plain comments on these structs: a doc comment
// would replace the subcommand's description in `--help`.)
#[derive(Args)]
pub struct RecordArgs {
    /// Directory to record.
    dir: PathBuf,
    #[command(flatten)]
    catalog: CatalogArg,
    /// Leave out paths matching GLOB (matched against the relative path and the file
    /// name; an excluded directory drops its whole subtree). Repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Read every file and store its digest (for `verify --deep`).
    #[arg(long, value_enum)]
    hash: Option<HashArg>,
    /// Keep real uid/gid, user and group names and permission bits.
    #[arg(long)]
    no_anonymize: bool,
    /// Name of the top directory inside the archive (default: DIR's name).
    #[arg(long, value_name = "NAME")]
    arc_root: Option<OsString>,
    /// Replace an existing catalog.
    #[arg(long)]
    force: bool,
    /// Skip unreadable files and directories (listed in the summary) instead of failing.
    #[arg(long)]
    skip_unreadable: bool,
    /// Refuse what the Python tartape refuses (a header path over 255 bytes, with a
    /// component over 100 bytes or no ustar split; a symlink target over 100 bytes):
    /// all are listed and no catalog is written. Without it, entries whose path or
    /// target does not fit ustar get a PAX header.
    #[arg(long)]
    strict_ustar: bool,
    /// The summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `--hash`.
#[derive(Clone, Copy, ValueEnum)]
enum HashArg {
    Md5,
    Sha256,
}

/// `tartape record DIR`.
pub fn run(args: RecordArgs) -> Result<Exit> {
    let mut recorder = TapeRecorder::new(&args.dir)
        .catalog(args.catalog.catalog)
        .hash(args.hash.map(|h| match h {
            HashArg::Md5 => HashAlgo::Md5,
            HashArg::Sha256 => HashAlgo::Sha256,
        }))
        .anonymize(!args.no_anonymize)
        .arc_root(args.arc_root.map(|n| n.as_bytes().to_vec()))
        .force(args.force)
        .skip_unreadable(args.skip_unreadable)
        .strict_ustar(args.strict_ustar);
    for g in args.exclude {
        recorder = recorder.exclude(g);
    }
    let summary = record_with_progress(recorder)?;
    let mut out = Out::stdout();
    if args.json {
        out.json(&summary_json(&summary))?;
    } else {
        out.line(&summary)?;
    }
    out.flush()?;
    Ok(Exit::Success)
}

/// Commits `recorder` with a spinner counting entries, when progress is shown.
pub fn record_with_progress(mut recorder: TapeRecorder) -> Result<RecordSummary> {
    let bar = output::spinner("recording");
    if let Some(bar) = bar.clone() {
        recorder = recorder.on_progress(move |n| bar.set_message(format!("{n} entries")));
    }
    let summary = recorder.commit();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    summary
}

/// `record --json`: the summary as one object.
fn summary_json(summary: &RecordSummary) -> serde_json::Value {
    let paths = |list: &mut dyn Iterator<Item = (&PathBuf, &str)>| -> Vec<serde_json::Value> {
        list.map(|(p, why)| serde_json::json!({"path": p.to_string_lossy(), "why": why}))
            .collect()
    };
    serde_json::json!({
        "fingerprint": summary.fingerprint,
        "catalog": summary.catalog.to_string_lossy(),
        "entry_count": summary.files + summary.dirs + summary.symlinks,
        "files": summary.files,
        "dirs": summary.dirs,
        "symlinks": summary.symlinks,
        "long_entries": summary.long_entries,
        "data_size": summary.data_size,
        "total_size": summary.total_size,
        "skipped_special": paths(&mut summary.skipped_special.iter().map(|(p, k)| (p, *k))),
        "skipped_unreadable": paths(
            &mut summary.skipped_unreadable.iter().map(|(p, why)| (p, why.as_str()))
        ),
    })
}
