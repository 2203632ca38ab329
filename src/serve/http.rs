//! HTTP semantics of serving one file (RFC 9110), as pure functions: which answer a GET or
//! HEAD gets given its conditional and range headers, and the layout of a
//! `multipart/byteranges` body. The server does the I/O; everything that can be decided
//! from the headers and the file's size, ETag and date is decided here, and unit-tested.
//!
//! Range headers are parsed by `http-range-header` (syntax only: its own validation
//! refuses overlapping ranges, which RFC 9110 lets a server merge); conditional headers by
//! the `headers` crate.

use std::ops::RangeInclusive;
use std::time::SystemTime;

use headers::{
    ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince,
};
use http_range_header::{RangeUnsatisfiableError, SyntacticallyCorrectRange};

/// Ranges served at most in one answer, after merging (nginx's `max_ranges`): a header
/// asking for more is ignored, and the whole file is sent.
pub const MAX_RANGES: usize = 16;

/// What one file is, for the headers of its answers.
#[derive(Debug, Clone)]
pub struct Representation {
    /// Its size in bytes.
    pub size: u64,
    /// Its strong entity tag.
    pub etag: ETag,
    /// When it was made (the recording time).
    pub modified: SystemTime,
}

/// The answer a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole file.
    Full,
    /// 206 with one range, `[start, end]` inclusive.
    Partial(u64, u64),
    /// 206 `multipart/byteranges` with these ranges (inclusive), merged and sorted.
    Multipart(Vec<(u64, u64)>),
    /// 304: the client's copy is current.
    NotModified,
    /// 412: `If-Match` or `If-Unmodified-Since` says the client expects another file.
    PreconditionFailed,
    /// 416 with `Content-Range: bytes */SIZE`.
    Unsatisfiable,
}

/// Decides the answer to a GET (or HEAD) of `rep` with `headers` (RFC 9110 §13, §14).
pub fn answer(headers: &http::HeaderMap, rep: &Representation) -> Answer {
    // §13.2.2: If-Match first; If-Unmodified-Since only without it.
    if let Some(im) = headers.typed_get::<IfMatch>() {
        if !im.precondition_passes(&rep.etag) {
            return Answer::PreconditionFailed;
        }
    } else if let Some(ius) = headers.typed_get::<IfUnmodifiedSince>()
        && !ius.precondition_passes(rep.modified)
    {
        return Answer::PreconditionFailed;
    }
    // Then If-None-Match; If-Modified-Since only without it.
    if let Some(inm) = headers.typed_get::<IfNoneMatch>() {
        if !inm.precondition_passes(&rep.etag) {
            return Answer::NotModified;
        }
    } else if let Some(ims) = headers.typed_get::<IfModifiedSince>()
        && !ims.is_modified(rep.modified)
    {
        return Answer::NotModified;
    }
    let Some(range) = headers.get(http::header::RANGE) else {
        return Answer::Full;
    };
    // §13.1.5: a Range under an If-Range that does not match exactly (a strong ETag, or
    // the very date) is ignored; so is one under an If-Range that is neither (a validator
    // that cannot match).
    if headers.contains_key(http::header::IF_RANGE) {
        let matches = headers.typed_get::<IfRange>().is_some_and(|if_range| {
            if_range == IfRange::etag(rep.etag.clone()) || if_range == IfRange::date(rep.modified)
        });
        if !matches {
            return Answer::Full;
        }
    }
    let Ok(range) = range.to_str() else {
        return Answer::Full;
    };
    resolve_ranges(range, rep.size)
}

/// The answer to `Range: <value>` on a file of `size` bytes: satisfiable ranges clamped to
/// the file, overlapping and adjacent ones merged; a header that does not parse (or asks
/// for too many) is ignored (§14.2: a server may).
pub fn resolve_ranges(value: &str, size: u64) -> Answer {
    let parsed = match http_range_header::parse_range_header(value) {
        Ok(parsed) => parsed,
        // Syntax it does not take, or too many ranges: ignored, the whole file is sent.
        Err(RangeUnsatisfiableError::Invalid(_) | RangeUnsatisfiableError::Rejected(_)) => {
            return Answer::Full;
        }
        Err(_) => return Answer::Unsatisfiable,
    };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    // §14.1.2: of an empty file, only a suffix of non-zero length can be satisfied (and
    // selects nothing: the whole, empty, file is sent).
    let mut empty_suffix = false;
    for r in parsed.into_ranges() {
        if let SyntacticallyCorrectRange::FromLast(n) = r {
            empty_suffix |= size == 0 && n > 0;
        }
        let range = match r {
            SyntacticallyCorrectRange::FromStart(start) => {
                (start < size).then(|| (start, size - 1))
            }
            // §14.1.2: a suffix longer than the file selects all of it; `-0` nothing.
            SyntacticallyCorrectRange::FromLast(n) => {
                (n > 0 && size > 0).then(|| (size.saturating_sub(n), size - 1))
            }
            SyntacticallyCorrectRange::Indexed(start, end) => {
                (start < size).then(|| (start, end.min(size - 1)))
            }
        };
        ranges.extend(range.filter(|(a, b)| a <= b));
    }
    if ranges.is_empty() {
        return if empty_suffix {
            Answer::Full
        } else {
            Answer::Unsatisfiable
        };
    }
    let merged = merge(ranges);
    match merged.as_slice() {
        [] => Answer::Unsatisfiable,
        [(a, b)] => Answer::Partial(*a, *b),
        _ if merged.len() > MAX_RANGES => Answer::Full,
        _ => Answer::Multipart(merged),
    }
}

/// Sorted, with overlapping and adjacent ranges joined.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// One piece of a response body: bytes of its own, or a range of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes written as they are (a part's headers, the closing boundary).
    Text(Vec<u8>),
    /// File bytes `[start, end]` inclusive.
    File(RangeInclusive<u64>),
}

/// The body of a `multipart/byteranges` answer (RFC 9110 §14.6) of `ranges` of a file of
/// `size` bytes and `content_type`, with `boundary`: its pieces, in order.
pub fn multipart_body(
    ranges: &[(u64, u64)],
    size: u64,
    content_type: &str,
    boundary: &str,
) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(2 * ranges.len() + 1);
    for (i, &(a, b)) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        pieces.push(Piece::Text(
            format!(
                "{lead}--{boundary}\r\nContent-Type: {content_type}\r\n\
                 Content-Range: bytes {a}-{b}/{size}\r\n\r\n"
            )
            .into_bytes(),
        ));
        pieces.push(Piece::File(a..=b));
    }
    pieces.push(Piece::Text(format!("\r\n--{boundary}--\r\n").into_bytes()));
    pieces
}

/// The number of bytes `pieces` make.
pub fn body_len(pieces: &[Piece]) -> u64 {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.len() as u64,
            Piece::File(r) => r.end() - r.start() + 1,
        })
        .sum()
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266, RFC 8187): an ASCII
/// fallback (other bytes as `_`) and the exact name, percent-encoded.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' && c != '%' => c,
            _ => '_',
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encode(name)
    )
}

/// `name` with every byte but RFC 3986's unreserved ones percent-encoded: a path segment,
/// or a `filename*` value.
pub fn percent_encode(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, UNRESERVED_ONLY).to_string()
}

/// Everything but `A-Z a-z 0-9 - . _ ~` is encoded.
const UNRESERVED_ONLY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The file name a request path names: `/NAME` percent-decoded, or `None` for anything
/// else (a deeper path, `..` however encoded, a NUL, bytes that are not UTF-8).
pub fn file_name(path: &str) -> Option<String> {
    let encoded = path.strip_prefix('/')?;
    let name = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?
        .into_owned();
    let fine = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0');
    fine.then_some(name)
}

/// Whether the index should be JSON rather than HTML, by `Accept` (RFC 9110 §12.5.1):
/// JSON when `application/json` is named (or `application/*`) with a quality above 0 and
/// not below HTML's. `*/*` alone (curl's, a browser's) gets the page; so does
/// `application/json;q=0`, or JSON ranked below `text/html`.
pub fn prefers_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    // The quality of `wanted` (type, subtype) by its most specific range, with that
    // specificity (2 named, 1 `type/*`, 0 `*/*`); `None` when no range covers it.
    let quality = |wanted: (&str, &str)| -> Option<(u8, f32)> {
        let mut best: Option<(u8, f32)> = None;
        for item in accept.split(',') {
            let Ok(range) = item.trim().parse::<mime::Mime>() else {
                continue;
            };
            let specific = match (range.type_().as_str(), range.subtype().as_str()) {
                (t, s) if t.eq_ignore_ascii_case(wanted.0) && s.eq_ignore_ascii_case(wanted.1) => 2,
                (t, "*") if t.eq_ignore_ascii_case(wanted.0) => 1,
                ("*", "*") => 0,
                _ => continue,
            };
            let q = range
                .get_param("q")
                .and_then(|q| q.as_str().parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            if best.is_none_or(|(s, _)| specific > s) {
                best = Some((specific, q));
            }
        }
        best
    };
    let html = quality(("text", "html")).map_or(0.0, |(_, q)| q);
    quality(("application", "json"))
        .is_some_and(|(specific, q)| specific > 0 && q > 0.0 && q >= html)
}

/// The most a request head may hold (its request line, or all of it), as nginx's 8 KiB
/// header buffers.
pub const MAX_HEAD: usize = 8192;

/// Whether a request head is over [`MAX_HEAD`]: `414 URI Too Long` when its request line
/// is, else `431 Request Header Fields Too Large` when the head as a whole is. Sizes are
/// counted as the head was sent: `METHOD SP TARGET SP HTTP/1.1 CRLF`, each field
/// `NAME: VALUE CRLF`, the final CRLF. (hyper reads heads up to a larger buffer, so that a
/// long request line can be told apart from many headers; past that buffer it answers 431
/// by itself.)
pub fn head_too_large(
    method: &http::Method,
    target: &str,
    headers: &http::HeaderMap,
) -> Option<http::StatusCode> {
    let line = method.as_str().len() + 1 + target.len() + " HTTP/1.1\r\n".len();
    if line > MAX_HEAD {
        return Some(http::StatusCode::URI_TOO_LONG);
    }
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    (line + fields + 2 > MAX_HEAD).then_some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn rep() -> Representation {
        Representation {
            size: 100,
            etag: "\"abc\"".parse().unwrap(),
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn the_index_is_json_only_when_json_is_preferred() {
        for (accept, json) in [
            (None, false),
            (Some("application/json"), true),
            (Some("Application/JSON"), true),
            (Some("application/json, text/html;q=0.9"), true),
            (Some("text/html, application/json"), true),
            (Some("application/json, text/plain, */*"), true),
            (Some("application/json, */*;q=0.5"), true),
            (Some("application/json;q=0, text/html"), false),
            (Some("application/json;q=0"), false),
            (Some("application/*"), true),
            (Some("*/*"), false),
            (Some("*/*;q=0.1, application/json"), true),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                false,
            ),
            (Some("text/*, application/json;q=0.5"), false),
            (Some("garbage"), false),
            (Some(""), false),
        ] {
            assert_eq!(prefers_json(accept), json, "{accept:?}");
        }
    }

    #[test]
    fn an_if_range_that_is_neither_etag_nor_date_sends_the_whole_file() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RANGE, "bytes=0-9".parse().unwrap());
        assert_eq!(answer(&h, &rep()), Answer::Partial(0, 9));
        h.insert(http::header::IF_RANGE, "garbage".parse().unwrap());
        assert_eq!(answer(&h, &rep()), Answer::Full);
        h.insert(http::header::IF_RANGE, "\"abc\"".parse().unwrap());
        assert_eq!(answer(&h, &rep()), Answer::Partial(0, 9));
    }

    #[test]
    fn heads_over_8_kib_are_414_for_the_request_line_else_431() {
        let get = http::Method::GET;
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "127.0.0.1:8080".parse().unwrap());
        assert_eq!(head_too_large(&get, "/a.tar", &headers), None);
        // "GET " + target + " HTTP/1.1\r\n" + "\r\n": a head of exactly 8 KiB.
        let fits = format!("/{}", "a".repeat(8192 - 4 - 11 - 2 - 1));
        assert_eq!(
            head_too_large(&get, &fits, &http::HeaderMap::new()),
            None,
            "a head of exactly 8 KiB, no field"
        );
        assert_eq!(
            head_too_large(&get, &format!("{fits}a"), &http::HeaderMap::new()),
            Some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "one byte more, with a request line still under 8 KiB"
        );
        let long = format!("{fits}aaa");
        assert_eq!(
            head_too_large(&get, &long, &headers),
            Some(http::StatusCode::URI_TOO_LONG)
        );
        // A short line with fields that bring the head over 8 KiB.
        let mut big = headers.clone();
        big.insert("x-a", "b".repeat(8150).parse().unwrap());
        assert_eq!(
            head_too_large(&get, "/a.tar", &big),
            Some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let mut near = headers.clone();
        near.insert("x-a", "b".repeat(8000).parse().unwrap());
        assert_eq!(head_too_large(&get, "/a.tar", &near), None);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |v: &str| resolve_ranges(v, 100);
        // Suffixes, open ranges, single bytes.
        assert_eq!(
            r("bytes=-999999"),
            Answer::Partial(0, 99),
            "suffix longer than the file"
        );
        assert_eq!(r("bytes=-1"), Answer::Partial(99, 99));
        assert_eq!(r("bytes=0-0"), Answer::Partial(0, 0));
        assert_eq!(r("bytes=99-"), Answer::Partial(99, 99));
        assert_eq!(r("bytes=50-1000"), Answer::Partial(50, 99), "end clamped");
        assert_eq!(r("bytes=0-18446744073709551616"), Answer::Partial(0, 99));
        // Past the end: unsatisfiable, unless another range is not.
        assert_eq!(r("bytes=100-"), Answer::Unsatisfiable);
        assert_eq!(r("bytes=150-200"), Answer::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Answer::Unsatisfiable);
        assert_eq!(r("bytes=0-10,200-300"), Answer::Partial(0, 10));
        // Overlapping and adjacent: merged.
        assert_eq!(r("bytes=0-10,5-20"), Answer::Partial(0, 20));
        assert_eq!(r("bytes=0-10,5-20,8-30"), Answer::Partial(0, 30));
        assert_eq!(r("bytes=0-10,11-20"), Answer::Partial(0, 20));
        assert_eq!(
            r("bytes=50-59, 0-9,20-29"),
            Answer::Multipart(vec![(0, 9), (20, 29), (50, 59)])
        );
        // Syntax that does not parse: the header is ignored.
        assert_eq!(r("bytes=10-5"), Answer::Full);
        assert_eq!(r("items=0-1"), Answer::Full);
        assert_eq!(r("bytes=abc"), Answer::Full);
        assert_eq!(r("BYTES=0-1"), Answer::Partial(0, 1));
        // More than 16 ranges after merging, or 1,000 ranges: ignored, no amplification.
        let many: Vec<String> = (0..17)
            .map(|i| format!("{}-{}", i * 5, i * 5 + 1))
            .collect();
        assert_eq!(r(&format!("bytes={}", many.join(","))), Answer::Full);
        let sixteen: Vec<String> = (0..16)
            .map(|i| format!("{}-{}", i * 5, i * 5 + 1))
            .collect();
        assert!(
            matches!(r(&format!("bytes={}", sixteen.join(","))), Answer::Multipart(v) if v.len() == 16)
        );
        let thousand: Vec<String> = (0..1000).map(|_| "0-99".to_string()).collect();
        assert_eq!(r(&format!("bytes={}", thousand.join(","))), Answer::Full);
        // An empty file.
        assert_eq!(resolve_ranges("bytes=0-", 0), Answer::Unsatisfiable);
        assert_eq!(resolve_ranges("bytes=-5", 0), Answer::Full);
    }

    #[test]
    fn conditionals_decide_before_ranges() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            answer(&h, &rep())
        };
        assert_eq!(with(&[]), Answer::Full);
        assert_eq!(with(&[("if-none-match", "\"abc\"")]), Answer::NotModified);
        assert_eq!(with(&[("if-none-match", "W/\"abc\"")]), Answer::NotModified);
        assert_eq!(with(&[("if-none-match", "*")]), Answer::NotModified);
        assert_eq!(with(&[("if-none-match", "\"other\"")]), Answer::Full);
        let date = "Tue, 14 Nov 2023 22:13:20 GMT"; // the file's own date
        assert_eq!(with(&[("if-modified-since", date)]), Answer::NotModified);
        let before = "Tue, 14 Nov 2023 22:13:19 GMT";
        assert_eq!(with(&[("if-modified-since", before)]), Answer::Full);
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            with(&[("if-none-match", "\"other\""), ("if-modified-since", date)]),
            Answer::Full
        );
        // If-Range: the ETag or the date, strongly; otherwise the whole file.
        let range = ("range", "bytes=10-19");
        assert_eq!(
            with(&[range, ("if-range", "\"abc\"")]),
            Answer::Partial(10, 19)
        );
        assert_eq!(with(&[range, ("if-range", date)]), Answer::Partial(10, 19));
        assert_eq!(with(&[range, ("if-range", "\"stale\"")]), Answer::Full);
        assert_eq!(with(&[range, ("if-range", "W/\"abc\"")]), Answer::Full);
        assert_eq!(with(&[range, ("if-range", before)]), Answer::Full);
        let after = "Tue, 14 Nov 2023 22:13:21 GMT";
        assert_eq!(
            with(&[range, ("if-range", after)]),
            Answer::Full,
            "not the very date"
        );
        // If-Match and If-Unmodified-Since: 412 when they do not hold, before anything.
        assert_eq!(with(&[("if-match", "\"abc\"")]), Answer::Full);
        assert_eq!(with(&[("if-match", "*")]), Answer::Full);
        assert_eq!(
            with(&[("if-match", "\"old\""), range]),
            Answer::PreconditionFailed
        );
        assert_eq!(
            with(&[("if-match", "W/\"abc\"")]),
            Answer::PreconditionFailed
        );
        assert_eq!(with(&[("if-unmodified-since", date)]), Answer::Full);
        assert_eq!(
            with(&[("if-unmodified-since", before)]),
            Answer::PreconditionFailed
        );
        assert_eq!(
            with(&[("if-match", "\"abc\""), ("if-unmodified-since", before)]),
            Answer::Full,
            "If-Unmodified-Since only without If-Match"
        );
        assert_eq!(with(&[("range", "bytes=500-")]), Answer::Unsatisfiable);
    }

    #[test]
    fn multipart_bodies_say_their_length() {
        let pieces = multipart_body(&[(0, 9), (20, 29)], 100, "application/x-tar", "XYZ");
        let text = |p: &Piece| match p {
            Piece::Text(t) => String::from_utf8(t.clone()).unwrap(),
            Piece::File(r) => format!("<{}-{}>", r.start(), r.end()),
        };
        let all: String = pieces.iter().map(text).collect();
        assert_eq!(
            all,
            "--XYZ\r\nContent-Type: application/x-tar\r\nContent-Range: bytes 0-9/100\r\n\r\n\
             <0-9>\r\n--XYZ\r\nContent-Type: application/x-tar\r\nContent-Range: bytes \
             20-29/100\r\n\r\n<20-29>\r\n--XYZ--\r\n"
        );
        let file_bytes = 20;
        let texts: u64 = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.len() as u64),
                _ => None,
            })
            .sum();
        assert_eq!(body_len(&pieces), texts + file_bytes);
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(
            content_disposition("été photos.tar"),
            "attachment; filename=\"_t_ photos.tar\"; filename*=UTF-8''%C3%A9t%C3%A9%20photos.tar"
        );
        assert_eq!(file_name("/photos.tar").as_deref(), Some("photos.tar"));
        assert_eq!(file_name("/%C3%A9t%C3%A9.tar").as_deref(), Some("été.tar"));
        for bad in [
            "/", "//x", "/a/b", "/..", "/%2e%2e", "/%2E%2E", "/a%2Fb", "/%00", "/%ff", "x",
        ] {
            assert_eq!(file_name(bad), None, "{bad}");
        }
    }
}
