//! `tartape stream`: the tape, a range of it or a volume, to a file or a pipe.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use tartape::player::Continuation;
use tartape::volume::Volumes;
use tartape::{Error, Event, Result, Tape};

use super::output::{self, Exit};
use super::{CatalogArg, VolumeArgs, parse_length, parse_offset};

// What `tartape stream` was asked to do.
#[derive(Args)]
pub struct StreamArgs {
    /// The recorded directory (its catalog: DIR/.tartape/index.db unless --catalog).
    dir: PathBuf,
    #[command(flatten)]
    catalog: CatalogArg,
    /// Output file (default: standard output, which must not be a terminal).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// First byte to write (suffixes K, M, G, T: powers of 1024).
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_offset)]
    offset: u64,
    /// Number of bytes to write (default: to the end; suffixes K, M, G, T).
    #[arg(long, value_name = "N", value_parser = parse_length)]
    length: Option<u64>,
    /// Resume into FILE (-o) at its size, like `curl -C -` / `wget -c`: its last 512
    /// bytes must be the tape's bytes there (otherwise FILE is left untouched).
    #[arg(long = "continue", requires = "output", conflicts_with = "offset")]
    resume: bool,
    /// Write JSON events (file_start, file_end with MD5, tape_completed), one per line,
    /// to FILE, or to standard error with `-`.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    #[command(flatten)]
    volumes: VolumeArgs,
    /// Write volume K (1 = the first) instead of the whole tape; --offset and --length
    /// then count inside the volume.
    #[arg(long, value_name = "K", requires = "volume_size")]
    volume: Option<u64>,
}

/// `tartape stream DIR`.
pub fn run(args: StreamArgs) -> Result<Exit> {
    let tape = Tape::open_with(&args.dir, args.catalog.path())?;
    let total = tape.total_size();
    let (start, end) = match (args.volume, args.volumes.volume_size) {
        (Some(k), Some(size)) => {
            Volumes::new(size, total)?.range_in(k, args.offset, args.length)?
        }
        (None, Some(_)) => {
            return Err(Error::Usage(
                "--volume-size needs --volume K to say which volume to write \
                 (`tartape volumes` lists them)"
                    .into(),
            ));
        }
        _ if args.offset > total => {
            return Err(Error::Usage(format!(
                "--offset {} is past the end of the tape ({total} bytes)",
                args.offset
            )));
        }
        _ => {
            let end = args
                .length
                .map_or(total, |l| args.offset.saturating_add(l).min(total));
            (args.offset, end)
        }
    };
    stream(
        &tape,
        args.output.as_deref(),
        start,
        end,
        args.resume,
        args.events,
    )?;
    Ok(Exit::Success)
}

/// Writes tape bytes `[start, end)` to `output` (standard output when `None`), resuming
/// into it with `resume`; JSON events to `events`.
fn stream(
    tape: &Tape,
    output: Option<&Path>,
    mut start: u64,
    end: u64,
    resume: bool,
    events: Option<PathBuf>,
) -> Result<()> {
    let stdout = io::stdout();
    let file = match output {
        Some(p) if resume => match tape.continue_file(p, start, end)? {
            Continuation::Complete => {
                output::note(format!(
                    "{}: already complete ({} bytes)",
                    p.display(),
                    end - start
                ));
                return Ok(());
            }
            Continuation::From { file, have } => {
                start += have;
                Some(file)
            }
        },
        Some(p) => Some(File::create(p).map_err(|e| Error::io(p, e))?),
        None if stdout.is_terminal() => {
            return Err(Error::Usage(
                "refusing to write a binary tape to a terminal; use -o FILE or a pipe".into(),
            ));
        }
        None => None,
    };
    let events_to_stderr = events.as_deref() == Some(Path::new("-"));
    let mut events_out: Option<(PathBuf, Box<dyn Write>)> = match events {
        None => None,
        Some(p) if events_to_stderr => Some((p, Box::new(io::stderr()))),
        Some(p) => {
            let f = File::create(&p).map_err(|e| Error::io(&p, e))?;
            Some((p, Box::new(BufWriter::new(f))))
        }
    };
    let bar = if events_to_stderr {
        None
    } else {
        output::bytes_bar(end - start)
    };
    let with_events = events_out.is_some();
    let observe = |event: &Event<'_>| {
        match event {
            Event::Content { len, .. } => {
                if let Some(b) = &bar {
                    b.inc(*len);
                }
                return Ok(());
            }
            Event::Data(bytes) => {
                if let Some(b) = &bar {
                    b.inc(bytes.len() as u64);
                }
                return Ok(());
            }
            Event::FileStart { entry, .. } => {
                if let Some(b) = &bar {
                    b.set_message(entry.display_path());
                }
            }
            _ => {}
        }
        if let (Some((p, w)), Some(json)) = (events_out.as_mut(), event.to_json()) {
            writeln!(w, "{json}").map_err(|e| Error::io(&*p, e))?;
        }
        Ok(())
    };
    let player = tape.player().md5(with_events);
    let marks = with_events || bar.is_some();
    let length = Some(end - start);
    let result = match (&file, output) {
        (Some(f), Some(name)) => player.write_to(start, length, f, name, marks, observe),
        _ => player.write_to(
            start,
            length,
            stdout.lock(),
            Path::new("<stdout>"),
            marks,
            observe,
        ),
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some((p, mut w)) = events_out {
        w.flush().map_err(|e| Error::io(&p, e))?;
    }
    result
}
