//! S3-compatible object storage (SPEC §9): where the store is and who we are to it
//! ([`config`]), a client of one bucket behind the [`ObjectStore`] trait ([`client`]),
//! when to try again ([`retry`]).

pub mod client;
pub mod config;
pub mod retry;
mod xml;

pub use client::{Client, Metadata, ObjectInfo, ObjectStore, PartInfo, Payload};
pub use config::{Options, Settings};

use crate::error::{Error, Result};

/// The metadata key of the tape's fingerprint on an object tartape wrote
/// (`x-amz-meta-tartape-fingerprint`).
pub const FINGERPRINT_META: &str = "tartape-fingerprint";
/// The metadata key of a volume's `K/N` on an object tartape wrote
/// (`x-amz-meta-tartape-volume`).
pub const VOLUME_META: &str = "tartape-volume";

/// `s3://BUCKET/KEY`: a bucket, and a key in it (or a prefix, ending with `/` or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket's name.
    pub bucket: String,
    /// The key (or prefix), without the leading `/`.
    pub key: String,
}

impl S3Url {
    /// Whether `text` is an `s3://` URL at all (a `--from` may be a local path).
    pub fn is_s3(text: &str) -> bool {
        text.starts_with("s3://")
    }

    /// Parses `s3://BUCKET/KEY`.
    pub fn parse(text: &str) -> Result<S3Url> {
        let bad = |why: &str| Error::Usage(format!("{text:?}: {why} (s3://BUCKET/KEY)"));
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        if bucket.len() > 255 || bucket.contains(|c: char| c.is_whitespace() || c == '\\') {
            return Err(bad("not a bucket name"));
        }
        if key.len() > 1024 {
            return Err(bad("the key is over 1,024 bytes"));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// Whether the key names a folder of objects (empty, or ending with `/`).
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// The key of `name` under this prefix (a `/` put between when missing).
    pub fn child(&self, name: &str) -> String {
        if self.key.is_empty() || self.key.ends_with('/') {
            format!("{}{name}", self.key)
        } else {
            format!("{}/{name}", self.key)
        }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        let u = S3Url::parse("s3://photos/backups/2024.tar").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("photos", "backups/2024.tar")
        );
        assert!(!u.is_prefix());
        assert_eq!(u.to_string(), "s3://photos/backups/2024.tar");
        let p = S3Url::parse("s3://photos/backups/").unwrap();
        assert!(p.is_prefix());
        assert_eq!(p.child("a.tar.001"), "backups/a.tar.001");
        let bare = S3Url::parse("s3://photos").unwrap();
        assert!(bare.is_prefix());
        assert_eq!(bare.child("x"), "x");
        assert_eq!(S3Url::parse("s3://photos/vol").unwrap().child("x"), "vol/x");
        for bad in ["photos/x", "s3:///x", "http://b/k"] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
        assert!(S3Url::is_s3("s3://b/k") && !S3Url::is_s3("./s3:"));
    }
}
