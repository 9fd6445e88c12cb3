//! Token-bucket rate limiting per client, for login, registration and sending.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::{config::RateLimitConfig, error::Error};

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitClass {
    /// Authenticated actions (sending, joining, ...), per user.
    Action,
    /// Login and registration, per address.
    Login,
}

pub struct RateLimiter {
    enabled: bool,
    action: (f64, f64),
    login: (f64, f64),
    buckets: Mutex<HashMap<(LimitClass, String), (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            enabled: config.enabled,
            action: (config.per_second.max(0.001), f64::from(config.burst.max(1))),
            login: (config.login_per_second.max(0.001), f64::from(config.login_burst.max(1))),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token from the bucket of `key` in `class`, or says how long to wait.
    pub fn check(&self, class: LimitClass, key: &str) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let (rate, burst) = match class {
            LimitClass::Action => self.action,
            LimitClass::Login => self.login,
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Buckets that have refilled carry no information; forget them rather than grow.
            let (action, login) = (self.action, self.login);
            buckets.retain(|(c, _), (tokens, at)| {
                let (r, b) = if *c == LimitClass::Login { login } else { action };
                *tokens + at.elapsed().as_secs_f64() * r < b
            });
        }
        let (tokens, at) = buckets.entry((class, key.to_owned())).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / rate * 1000.0).ceil() as u64;
            Err(Error::limit_exceeded(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let config = RateLimitConfig { per_second: 1.0, burst: 3, login_burst: 1, ..Default::default() };
        let limiter = RateLimiter::new(&config);
        for _ in 0..3 {
            limiter.check(LimitClass::Action, "a").unwrap();
        }
        let err = limiter.check(LimitClass::Action, "a").unwrap_err();
        assert_eq!(err.errcode, "M_LIMIT_EXCEEDED");
        assert!(err.retry_after_ms.unwrap() > 0);
        limiter.check(LimitClass::Action, "b").expect("buckets are per client");
        limiter.check(LimitClass::Login, "a").expect("classes have their own buckets");
        assert!(limiter.check(LimitClass::Login, "a").is_err(), "the login class has its own, smaller burst");
    }
}
