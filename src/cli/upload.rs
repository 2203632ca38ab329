//! `tartape upload`: the tape (or its volumes) into an S3-compatible bucket, resumable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use clap::Args;

use tartape::s3::{Client, Options, S3Url, Settings};
use tartape::upload::plan::{MAX_PART, MIN_PART};
use tartape::upload::{Object, ObjectSummary, Progress, Uploader, tape_object, volume_objects};
use tartape::{Error, Result, Tape};

use super::output::{self, Exit, Out};
use super::{CatalogArg, VolumeArgs};

// What `tartape upload` was asked to do.
#[derive(Args)]
pub struct UploadArgs {
    /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
    dir: PathBuf,
    /// Where to: s3://BUCKET/KEY (with --volume-size, KEY is the prefix of the volumes).
    destination: String,
    #[command(flatten)]
    catalog: CatalogArg,
    #[command(flatten)]
    store: StoreArgs,
    /// Bytes of every part but the last: 5M to 5G (default: the smallest multiple of 8 MiB,
    /// at least 16 MiB, that keeps the tape within 10,000 parts).
    #[arg(long, value_name = "SIZE", value_parser = parse_part_size)]
    part_size: Option<u64>,
    /// Parts in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Abort the unfinished upload of this destination (on the server) and forget it.
    #[arg(long)]
    abort: bool,
    #[command(flatten)]
    volumes: VolumeArgs,
    /// A summary as one JSON object (one per object with --volume-size): bucket, key,
    /// upload_id, size, parts, parts_reused, bytes_sent, seconds, etag.
    #[arg(long)]
    json: bool,
}

// Where the store is and who we are to it (flags override AWS_* variables and ~/.aws).
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The S3 endpoint, for stores other than AWS (e.g. http://127.0.0.1:9000,
    /// https://ACCOUNT.r2.cloudflarestorage.com); default AWS_ENDPOINT_URL_S3,
    /// AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The region (default AWS_REGION, AWS_DEFAULT_REGION, the profile's, else us-east-1).
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// The profile of ~/.aws/credentials and ~/.aws/config (default AWS_PROFILE, else
    /// default).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
}

impl StoreArgs {
    /// The store's settings.
    pub fn settings(&self) -> Result<Settings> {
        Settings::from_env(&Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
        })
    }
}

/// A part size S3 takes (5 MiB to 5 GiB), found before anything else is done: a usage
/// error, exit 2, like any other bad value.
fn parse_part_size(text: &str) -> std::result::Result<u64, String> {
    let size = tartape::volume::parse_size(text, "--part-size").map_err(|e| e.to_string())?;
    if !(MIN_PART..=MAX_PART).contains(&size) {
        return Err(format!(
            "{size} bytes: S3 takes parts of 5 MiB (5242880) to 5 GiB (5368709120)"
        ));
    }
    Ok(size)
}

/// SIGINT and SIGTERM set the returned flag: no new part starts, the state is kept. A
/// second one ends the process at once.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered =
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)));
        registered.map_err(|e| Error::io("<signal handler>", e))?;
    }
    Ok(stop)
}

/// `tartape upload DIR s3://BUCKET/KEY`.
pub fn run(args: UploadArgs) -> Result<Exit> {
    let tape = Tape::open_with(&args.dir, args.catalog.path())?;
    let destination = S3Url::parse(&args.destination)?;
    let set = args.volumes.volume_set(&tape)?;
    if set.is_none() && destination.is_prefix() {
        return Err(Error::Usage(format!(
            "{destination}: give the object's key (s3://BUCKET/KEY), or --volume-size to \
             upload volumes under a prefix"
        )));
    }
    let settings = args.store.settings()?;
    settings.require_keys()?;
    super::live_through_sigpipe();
    let stop = stop_on_signals()?;
    let client = Client::new(&settings, &destination.bucket, Arc::clone(&stop))?;
    let objects: Vec<Object<'_>> = match &set {
        None => vec![tape_object(&tape, destination.key.clone())],
        Some(set) => volume_objects(&tape, set, &destination)?,
    };
    let catalog_dir = tape
        .catalog()
        .path()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let total: u64 = objects.iter().map(|o| o.size).sum();
    let bar = output::parts_bar(total);
    let parts_done = AtomicU64::new(0);
    let parts_total = AtomicU64::new(0);
    let progress = |p: Progress<'_>| {
        let Some(bar) = &bar else { return };
        match p {
            Progress::Object {
                key,
                parts,
                reused_parts,
                reused,
                ..
            } => {
                let all =
                    parts_total.fetch_add(u64::from(parts), Ordering::Relaxed) + u64::from(parts);
                let done = parts_done.fetch_add(u64::from(reused_parts), Ordering::Relaxed)
                    + u64::from(reused_parts);
                bar.inc(reused);
                bar.set_prefix(format!("part {done}/{all}"));
                bar.set_message(key.to_string());
            }
            Progress::Part { bytes } => {
                let done = parts_done.fetch_add(1, Ordering::Relaxed) + 1;
                bar.inc(bytes);
                bar.set_prefix(format!(
                    "part {done}/{}",
                    parts_total.load(Ordering::Relaxed)
                ));
            }
            Progress::Skipped { key, size } => {
                bar.inc(size);
                bar.set_message(format!("{key} (already there)"));
            }
        }
    };
    let warn = |w: String| match &bar {
        Some(bar) => bar.suspend(|| output::warn(&w)),
        None => output::warn(&w),
    };
    let uploader = Uploader {
        store: &client,
        endpoint: settings.endpoint.clone(),
        bucket: destination.bucket.clone(),
        part_size: args.part_size,
        jobs: usize::from(args.jobs),
        state_dir: catalog_dir.join("uploads"),
        stop: &stop,
        progress: &progress,
        warn: &warn,
    };
    let mut out = Out::stdout();
    if args.abort {
        for object in &objects {
            let url = format!("s3://{}/{}", destination.bucket, object.key);
            let aborted = uploader.abort(&object.key)?;
            if aborted.is_empty() {
                out.line(format_args!("{url}: no unfinished upload to abort"))?;
            }
            for id in aborted {
                out.line(format_args!("{url}: aborted upload {id}"))?;
            }
        }
        return Ok(Exit::Success);
    }
    let mut summaries = Vec::new();
    for object in &objects {
        let started = Instant::now();
        match uploader.upload(object) {
            Ok(summary) => summaries.push((summary, started.elapsed().as_secs_f64())),
            Err(Error::Interrupted) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Ok(output::interrupted(&format!(
                    "the parts confirmed so far are kept; resume with: {}",
                    resume_command()
                )));
            }
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(e);
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    for (summary, seconds) in &summaries {
        report(&mut out, &destination.bucket, summary, *seconds, args.json)?;
    }
    out.flush()?;
    Ok(Exit::Success)
}

/// One object's summary line (text or JSON).
fn report(out: &mut Out, bucket: &str, s: &ObjectSummary, seconds: f64, json: bool) -> Result<()> {
    if json {
        return out.json(&serde_json::json!({
            "bucket": bucket,
            "key": s.key,
            "upload_id": s.upload_id,
            "size": s.size,
            "parts": s.parts,
            "parts_reused": s.parts_reused,
            "bytes_sent": s.bytes_sent,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "etag": s.etag,
            "already_uploaded": s.already,
        }));
    }
    let url = format!("s3://{bucket}/{}", s.key);
    if s.already {
        return out.line(format_args!(
            "{url}: already uploaded ({} bytes, ETag {}); nothing sent",
            s.size, s.etag
        ));
    }
    out.line(format_args!(
        "uploaded {url}: {} bytes in {} part{}{}, {} bytes sent in {seconds:.1} s (ETag {})",
        s.size,
        s.parts,
        if s.parts == 1 { "" } else { "s" },
        if s.parts_reused > 0 {
            format!(" ({} already on the server)", s.parts_reused)
        } else {
            String::new()
        },
        s.bytes_sent,
        s.etag
    ))
}

/// This very command line, quoted for a shell.
fn resume_command() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
