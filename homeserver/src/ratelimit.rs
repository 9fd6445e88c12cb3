//! Token-bucket rate limiting per client, for login, registration and sending.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::{config::RateLimitConfig, error::Error};

pub struct RateLimiter {
    enabled: bool,
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            enabled: config.enabled,
            per_second: config.per_second.max(0.001),
            burst: f64::from(config.burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token from the bucket of `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Full buckets carry no information; forget them rather than grow without bound.
            let burst = self.burst;
            let rate = self.per_second;
            buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.per_second * 1000.0).ceil() as u64;
            Err(Error::limit_exceeded(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter = RateLimiter::new(&RateLimitConfig { enabled: true, per_second: 1.0, burst: 3 });
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let err = limiter.check("a").unwrap_err();
        assert_eq!(err.errcode, "M_LIMIT_EXCEEDED");
        assert!(err.retry_after_ms.unwrap() > 0);
        limiter.check("b").expect("buckets are per client");
    }
}
