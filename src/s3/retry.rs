//! When to try a request again, and how long to wait first (SPEC §9): exponential
//! backoff with full jitter, capped at 20 s a wait, at most 10 tries. Pure: the clock and
//! the randomness are the caller's.

use std::time::Duration;

/// Tries of one request, at most (the first one included).
pub const MAX_TRIES: u32 = 10;

/// The first wait, before jitter; each next one doubles.
const BASE: Duration = Duration::from_millis(500);

/// No wait is longer.
const CAP: Duration = Duration::from_secs(20);

/// How a failed try is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not the user's fault and maybe gone the next time: a dropped connection, a
    /// timeout, 5xx, 429, `SlowDown`.
    Transient,
    /// Trying again cannot mend it: bad credentials, no such bucket, access denied, …
    Final,
}

/// What an S3 error code (with its HTTP status) says about trying again.
pub fn verdict(status: u16, code: &str) -> Verdict {
    match code {
        "SlowDown"
        | "RequestTimeout"
        | "InternalError"
        | "ServiceUnavailable"
        | "RequestTimeTooSkewed"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequests"
        | "RequestLimitExceeded"
        | "BandwidthLimitExceeded"
        | "OperationAborted" => Verdict::Transient,
        _ if status >= 500 || status == 429 || status == 408 => Verdict::Transient,
        _ => Verdict::Final,
    }
}

/// The wait before try `next` (2 for the first retry, …, [`MAX_TRIES`]), given `random`
/// uniform in `[0, 1)`: full jitter over `min(CAP, BASE · 2^(next-2))`. `None` when no
/// try is left.
pub fn backoff(next: u32, random: f64) -> Option<Duration> {
    if !(2..=MAX_TRIES).contains(&next) {
        return None;
    }
    let ceiling = BASE.saturating_mul(1 << (next - 2).min(16)).min(CAP);
    Some(ceiling.mul_f64(random.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_stop_after_ten_tries() {
        let most = |next| backoff(next, 0.999_999).unwrap();
        assert!(backoff(1, 0.5).is_none());
        assert!(most(2) <= BASE && most(2) > BASE.mul_f64(0.99));
        assert!(most(3) <= 2 * BASE && most(3) > BASE);
        assert!(most(7) <= CAP);
        assert!(
            most(8) <= CAP && most(8) > CAP.mul_f64(0.99),
            "{:?}",
            most(8)
        );
        assert!(most(MAX_TRIES) <= CAP);
        assert!(backoff(MAX_TRIES + 1, 0.5).is_none());
        assert_eq!(backoff(5, 0.0), Some(Duration::ZERO));
        // All waits together: within the "about 3 minutes" of SPEC §9.
        let worst: Duration = (2..=MAX_TRIES).map(most).sum();
        assert!(worst < Duration::from_secs(120), "{worst:?}");
    }

    #[test]
    fn transient_failures_are_the_servers_not_the_users() {
        assert_eq!(verdict(503, "SlowDown"), Verdict::Transient);
        assert_eq!(verdict(500, "InternalError"), Verdict::Transient);
        assert_eq!(verdict(502, ""), Verdict::Transient);
        assert_eq!(verdict(429, ""), Verdict::Transient);
        assert_eq!(verdict(400, "RequestTimeout"), Verdict::Transient);
        assert_eq!(verdict(403, "InvalidAccessKeyId"), Verdict::Final);
        assert_eq!(verdict(403, "SignatureDoesNotMatch"), Verdict::Final);
        assert_eq!(verdict(404, "NoSuchBucket"), Verdict::Final);
        assert_eq!(verdict(403, "AccessDenied"), Verdict::Final);
        assert_eq!(verdict(400, "BadDigest"), Verdict::Final);
    }
}
