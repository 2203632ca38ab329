//! `serve --auth-file FILE`: who may read. FILE holds `user:password` lines (HTTP Basic),
//! or one line that is a bearer token; `#` starts a comment line. Secrets are compared in
//! time that does not depend on where they differ, and never printed.

use std::fmt;
use std::path::Path;

use base64::Engine;

use crate::error::{Error, Result};

/// The credentials a request must carry.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Basic …` with one of these `user:password` pairs.
    Basic(Vec<Vec<u8>>),
    /// `Authorization: Bearer TOKEN`.
    Bearer(Vec<u8>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic(users) => write!(f, "Basic({} users)", users.len()),
            Auth::Bearer(_) => f.write_str("Bearer(…)"),
        }
    }
}

impl Auth {
    /// Reads FILE; the second value is a warning when others may read it (0600 expected).
    pub fn from_file(path: &Path) -> Result<(Auth, Option<String>)> {
        use std::os::unix::fs::PermissionsExt;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mode = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .permissions()
            .mode();
        let warning = (mode & 0o077 != 0).then(|| {
            format!(
                "{}: mode {:04o}: others may read the credentials (chmod 600 it)",
                path.display(),
                mode & 0o7777
            )
        });
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let bad = |why: &str| {
            Error::Usage(format!(
                "{}: {why} (user:password lines, or one bearer token)",
                path.display()
            ))
        };
        let auth = match lines.as_slice() {
            [] => return Err(bad("no credentials")),
            [token] if !token.contains(':') => Auth::Bearer(token.as_bytes().to_vec()),
            _ if lines.iter().all(|l| {
                l.split_once(':')
                    .is_some_and(|(u, p)| !u.is_empty() && !p.is_empty())
            }) =>
            {
                Auth::Basic(lines.iter().map(|l| l.as_bytes().to_vec()).collect())
            }
            _ => return Err(bad("a line that is not user:password")),
        };
        Ok((auth, warning))
    }

    /// Whether the `Authorization` header `header` (if any) is allowed.
    pub fn allows(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else { return false };
        let Some((scheme, value)) = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.trim().split_once(' '))
        else {
            return false;
        };
        match self {
            Auth::Basic(users) if scheme.eq_ignore_ascii_case("basic") => {
                let Ok(given) = base64::engine::general_purpose::STANDARD.decode(value.trim())
                else {
                    return false;
                };
                // Every pair is compared, found or not.
                users
                    .iter()
                    .fold(false, |found, pair| found | equal(pair, &given))
            }
            Auth::Bearer(token) if scheme.eq_ignore_ascii_case("bearer") => {
                equal(token, value.trim().as_bytes())
            }
            _ => false,
        }
    }

    /// The `WWW-Authenticate` challenge of a 401.
    pub fn challenge(&self) -> &'static str {
        match self {
            Auth::Basic(_) => "Basic realm=\"tartape\", charset=\"UTF-8\"",
            Auth::Bearer(_) => "Bearer realm=\"tartape\"",
        }
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn equal(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn basic_and_bearer() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let (_d, path) = write("# users\nalice:s3cret\nbob:pa:ss\n", 0o600);
        let (auth, warning) = Auth::from_file(&path).unwrap();
        assert!(warning.is_none());
        assert!(auth.allows(Some(format!("Basic {}", b64("alice:s3cret")).as_bytes())));
        assert!(auth.allows(Some(format!("basic {}", b64("bob:pa:ss")).as_bytes())));
        assert!(!auth.allows(Some(format!("Basic {}", b64("alice:s3cre")).as_bytes())));
        assert!(!auth.allows(Some(format!("Basic {}", b64("alice:s3cretX")).as_bytes())));
        assert!(!auth.allows(Some(b"Bearer s3cret")));
        assert!(!auth.allows(None));
        assert!(!auth.allows(Some(b"Basic !!!")));
        assert!(!format!("{auth:?}").contains("s3cret"));
        let (_d, path) = write("tok-123\n", 0o644);
        let (auth, warning) = Auth::from_file(&path).unwrap();
        assert!(warning.unwrap().contains("chmod 600"));
        assert!(auth.allows(Some(b"Bearer tok-123")));
        assert!(!auth.allows(Some(b"Bearer tok-12")));
        assert!(!auth.allows(Some(format!("Basic {}", b64("x:tok-123")).as_bytes())));
        let (_d, path) = write("a:b\nnot a pair\n", 0o600);
        assert!(Auth::from_file(&path).is_err());
        let (_d, path) = write("\n# nothing\n", 0o600);
        assert!(Auth::from_file(&path).is_err());
    }
}
