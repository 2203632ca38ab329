//! Content digests of `record --hash`, checked by `verify --deep` and by `stream`.

use md5::Md5;
use sha2::{Digest, Sha256};

/// Content digest algorithms `--hash` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    /// MD5: 32 hex digits, what the stream's `file_end` events carry too.
    Md5,
    /// SHA-256: 64 hex digits.
    Sha256,
}

impl HashAlgo {
    /// The name `--hash` takes and the catalog stores (`md5`, `sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha256 => "sha256",
        }
    }

    /// The algorithm [`name`](Self::name) gives, or `None` for any other string.
    pub fn parse(s: &str) -> Option<HashAlgo> {
        match s {
            "md5" => Some(HashAlgo::Md5),
            "sha256" => Some(HashAlgo::Sha256),
            _ => None,
        }
    }

    /// Length of a digest in lower-case hex.
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 32,
            HashAlgo::Sha256 => 64,
        }
    }
}

/// MD5 or SHA-256 behind one interface.
pub enum ContentHasher {
    /// Hashing with [`HashAlgo::Md5`].
    Md5(Md5),
    /// Hashing with [`HashAlgo::Sha256`].
    Sha256(Sha256),
}

impl ContentHasher {
    /// A hasher of `algo` that has seen no bytes yet.
    pub fn new(algo: HashAlgo) -> ContentHasher {
        match algo {
            HashAlgo::Md5 => ContentHasher::Md5(Md5::new()),
            HashAlgo::Sha256 => ContentHasher::Sha256(Sha256::new()),
        }
    }

    /// Feeds the next bytes of the content, in order.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Md5(h) => h.update(data),
            ContentHasher::Sha256(h) => h.update(data),
        }
    }

    /// The digest in lower-case hex.
    pub fn finish(self) -> String {
        match self {
            ContentHasher::Md5(h) => hex(&h.finalize()),
            ContentHasher::Sha256(h) => hex(&h.finalize()),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_known_inputs() {
        let mut md5 = ContentHasher::new(HashAlgo::Md5);
        md5.update(b"abc");
        assert_eq!(md5.finish(), "900150983cd24fb0d6963f7d28e17f72");
        let mut sha = ContentHasher::new(HashAlgo::Sha256);
        sha.update(b"abc");
        assert_eq!(
            sha.finish(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for algo in [HashAlgo::Md5, HashAlgo::Sha256] {
            assert_eq!(HashAlgo::parse(algo.name()), Some(algo));
            assert_eq!(ContentHasher::new(algo).finish().len(), algo.hex_len());
        }
        assert_eq!(HashAlgo::parse("crc"), None);
        assert_eq!(hex(b"\x00\xffab"), "00ff6162");
    }
}
