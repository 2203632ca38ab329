//! `tartape restore`: entries back out of a tape's volumes or one archive.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Args;

use tartape::Result;
use tartape::restore::{Place, Progress, Restore};
use tartape::s3::{Client, S3Url};
use tartape::volume::NameTemplate;

use super::output::{self, Exit, Out};
use super::parse_volume_size;

// What `tartape restore` was asked to do.
#[derive(Args)]
pub struct RestoreArgs {
    /// The tape's catalog (e.g. the `<name>_<fp8>.tartape` copy a volume mount holds).
    catalog: PathBuf,
    /// A folder holding the volume files, or one whole archive.tar; or in a bucket,
    /// s3://BUCKET/KEY (the whole tape) or s3://BUCKET/PREFIX/ (its volumes).
    #[arg(long, value_name = "PLACE")]
    from: PathBuf,
    // Where the store is and who we are to it (with --from s3://…).
    #[command(flatten)]
    store: super::upload::StoreArgs,
    /// Archive paths to extract (a directory means its subtree); none means everything.
    paths: Vec<OsString>,
    /// Extract into DEST (created if missing).
    #[arg(
        short = 'C',
        long = "directory",
        value_name = "DEST",
        default_value = "."
    )]
    dest: PathBuf,
    /// Replace files and symlinks that already exist (kept otherwise).
    #[arg(long)]
    force: bool,
    /// The volume size, when the files in PLACE cannot tell it (see `tartape volumes`).
    #[arg(long, value_name = "SIZE", value_parser = parse_volume_size)]
    volume_size: Option<u64>,
    /// The volume name template the volumes were written with.
    #[arg(long, value_name = "TEMPLATE", default_value = tartape::volume::DEFAULT_TEMPLATE)]
    volume_name: String,
}

/// `tartape restore CATALOG --from PLACE [PATH…]`.
pub fn run(args: RestoreArgs) -> Result<Exit> {
    let template = NameTemplate::parse(&args.volume_name)?;
    let paths: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    let bar = output::bytes_bar(0);
    let from = args.from.to_str().filter(|f| S3Url::is_s3(f));
    let remote = match from {
        Some(text) => {
            let url = S3Url::parse(text)?;
            let settings = args.store.settings()?;
            super::live_through_sigpipe();
            let stop = super::upload::stop_on_signals()?;
            let client = Client::new(&settings, &url.bucket, stop)?;
            Some((url, client))
        }
        None => None,
    };
    let place = match &remote {
        Some((url, client)) => Place::Store { store: client, url },
        None => Place::Local(&args.from),
    };
    let request = Restore {
        catalog: &args.catalog,
        from: place,
        paths: &paths,
        dest: &args.dest,
        force: args.force,
        volume_size: args.volume_size,
        template,
    };
    let summary = request.run(|p| {
        if let Some(b) = &bar {
            match p {
                Progress::Total(n) => b.set_length(n),
                Progress::Entry(entry) => b.set_message(entry.display_path()),
                Progress::Bytes(n) => b.inc(n),
            }
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = summary?;
    Out::stdout().line(&summary)?;
    for w in &summary.warnings {
        output::warn(w);
    }
    Ok(Exit::Success)
}
