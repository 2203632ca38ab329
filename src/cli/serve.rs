//! `tartape serve`: tapes over HTTP.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;

use tartape::serve::{self, Auth, Options, Served};
use tartape::volume::NameTemplate;
use tartape::{Error, Result, Tape};

use super::VolumeArgs;
use super::output::{self, Exit, Out};

// What `tartape serve` was asked to do.
#[derive(Args)]
pub struct ServeArgs {
    /// The recorded directories (each with its catalog: DIR/.tartape/index.db unless
    /// --catalog).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// A catalog to use instead of DIR/.tartape/index.db: give it once for each DIR, in
    /// the same order.
    #[arg(long, value_name = "PATH")]
    catalog: Vec<PathBuf>,
    /// Where to listen (port 0: any free port; a non-loopback address serves the network).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Who may read: FILE holds `user:password` lines (HTTP Basic) or one bearer token
    /// (mode 0600 expected).
    #[arg(long, value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// Connections served at once; more wait.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: u32,
    #[command(flatten)]
    volumes: VolumeArgs,
}

/// `tartape serve DIR…`.
pub fn run(args: ServeArgs) -> Result<Exit> {
    if !args.catalog.is_empty() && args.catalog.len() != args.dirs.len() {
        return Err(Error::Usage(format!(
            "{} DIRs and {} --catalog: give one --catalog for each DIR (in the same order), \
             or none",
            args.dirs.len(),
            args.catalog.len()
        )));
    }
    let mut tapes = Vec::with_capacity(args.dirs.len());
    for (i, dir) in args.dirs.iter().enumerate() {
        let tape = Tape::open_with(dir, args.catalog.get(i).map(PathBuf::as_path))?;
        // Whatever is asked, the root entry is checked before any byte is served.
        tape.check_root()?;
        tapes.push(tape);
    }
    let volumes = match args.volumes.volume_size {
        Some(size) => Some((size, NameTemplate::parse(&args.volumes.volume_name)?)),
        None => None,
    };
    let served = Served::new(tapes, volumes)?;
    let auth = match &args.auth_file {
        Some(path) => {
            let (auth, warning) = Auth::from_file(path)?;
            if let Some(w) = warning {
                output::warn(w);
            }
            Some(auth)
        }
        None => None,
    };
    let addr = resolve(&args.listen)?;
    let listener = TcpListener::bind(addr).map_err(|e| {
        Error::Usage(format!(
            "--listen {}: cannot listen there ({e})",
            args.listen
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("<listener>", e))?;
    if !local.ip().is_loopback() && auth.is_none() {
        output::warn(format!(
            "serving {local} to the network without --auth-file: anyone who can reach it can \
             read these tapes"
        ));
    }
    // A client that hangs up mid-body (aria2c does on every segment), or a reader of
    // standard output gone after the URL.
    super::live_through_sigpipe();
    // First, at once and alone on its line, even with -q (it is the command's answer, not
    // a summary): a script that asked for port 0 learns where it is with `head -n 1`.
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "http://{}/", url_host(local))
            .and_then(|()| stdout.flush())
            .map_err(output::stdout_error)?;
    }
    // Then each file's URL. A reader gone after the first line (`| head -n 1`) does not
    // stop the server: these lines are only for people.
    let mut out = Out::stdout();
    for f in served.files() {
        let _ = out.line(format_args!(
            "  http://{}/{}  {} bytes",
            url_host(local),
            serve::http::percent_encode(&f.name),
            f.size
        ));
    }
    let _ = out.flush();
    drop(out);
    output::note(format_args!(
        "serving {} file{}; Ctrl-C stops",
        served.files().len(),
        if served.files().len() == 1 { "" } else { "s" }
    ));
    let options = Options {
        max_connections: args.max_connections as usize,
        auth,
        ..Options::default()
    };
    serve::serve(served, listener, options, true)?;
    Ok(Exit::Success)
}

/// `ADDR:PORT` (a host name too) as a socket address.
fn resolve(listen: &str) -> Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            Error::Usage(format!(
                "--listen {listen:?}: not ADDR:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:0, [::1]:8080)"
            ))
        })
}

/// The host part of a URL for `addr` (`[::1]:8080` for IPv6).
fn url_host(addr: SocketAddr) -> String {
    addr.to_string()
}
