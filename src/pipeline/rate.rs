//! Token buckets for send rate limits. Hand-written because the well-known
//! crates read their own clock, and tests drive time with tokio's paused clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::platform::Rate;

#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate) -> Self {
        let burst = f64::from(rate.burst.max(1));
        Self { per_second: rate.per_second.max(f64::MIN_POSITIVE), burst, tokens: burst, last: Instant::now() }
    }

    /// Takes one token, or says how long to wait until one is available.
    pub fn try_take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
        }
    }

    /// Waits until a token is available and takes it.
    pub async fn take(&mut self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_burst_then_rate() {
        let mut bucket = TokenBucket::new(Rate { per_second: 2.0, burst: 3 });
        let start = Instant::now();
        for _ in 0..3 {
            assert!(bucket.try_take().is_ok());
        }
        assert_eq!(bucket.try_take(), Err(Duration::from_millis(500)));
        for _ in 0..4 {
            bucket.take().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
