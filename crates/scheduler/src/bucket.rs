//! A token bucket for rate caps: `reserve(now, bytes)` answers how long to
//! wait before sending. Reservations may go into debt, so a large chunk is
//! never refused, only delayed; the wait is what the debt costs at the rate.

use std::time::Duration;

/// Bytes per second with a burst allowance.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Duration,
}

impl TokenBucket {
    /// A bucket refilling at `rate` bytes/s, holding at most `burst` bytes;
    /// it starts full.
    pub fn new(rate: u64, burst: u64) -> TokenBucket {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: rate.max(1) as f64,
            burst,
            tokens: burst,
            at: Duration::ZERO,
        }
    }

    /// A cap of `rate` bytes/s with a burst of 50 ms (at least 64 KiB): tight
    /// enough that a capped node cannot outrun its rate on short transfers.
    pub fn capped(rate: u64) -> TokenBucket {
        TokenBucket::new(rate, (rate / 20).max(64 << 10))
    }

    fn refill(&mut self, now: Duration) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.burst);
            self.at = now;
        }
    }

    /// How long until what is already reserved has been paid for: the
    /// queue of bytes waiting behind the cap, in time.
    pub fn backlog(&mut self, now: Duration) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes `bytes` now; returns how long the caller must wait before
    /// sending them to stay within the rate.
    pub fn reserve(&mut self, now: Duration, bytes: u64) -> Duration {
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(1000, 500);
        assert_eq!(
            b.reserve(Duration::ZERO, 500),
            Duration::ZERO,
            "the burst is free"
        );
        assert_eq!(
            b.reserve(Duration::ZERO, 1000),
            S,
            "1000 more bytes cost a second"
        );
        // two seconds later the debt is paid and 1000 bytes refilled (capped at burst)
        assert_eq!(b.reserve(3 * S, 500), Duration::ZERO);
        assert_eq!(b.reserve(3 * S, 250), Duration::from_millis(250));
    }

    #[test]
    fn backlog_is_the_debt_in_time() {
        let mut b = TokenBucket::new(1000, 500);
        assert_eq!(b.backlog(Duration::ZERO), Duration::ZERO);
        b.reserve(Duration::ZERO, 2500);
        assert_eq!(b.backlog(Duration::ZERO), 2 * S);
        assert_eq!(b.backlog(S), S);
        assert_eq!(b.backlog(3 * S), Duration::ZERO);
    }

    #[test]
    fn long_run_average_is_the_rate() {
        let mut b = TokenBucket::new(1 << 20, 1 << 20);
        let mut now = Duration::ZERO;
        for _ in 0..100 {
            now += b.reserve(now, 1 << 20);
        }
        // 100 MiB at 1 MiB/s, less the 1 MiB burst: 99 s
        assert_eq!(now.as_secs(), 99);
    }
}
