//! When and from where each device was last seen (`last_seen_ts`, `last_seen_ip` in
//! `GET /devices` and the admin API).
//!
//! A request is not a write: a device's row is written at most once per [`INTERVAL`], or
//! when its address changes, as Synapse batches client IPs. The write runs on a task of its
//! own, so the request does not wait for it.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kairan_core::time::now_ms;
use ruma::UserId;

use crate::services::Services;

/// How stale `last_seen_ts` may be.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Devices remembered before the memory is cleared (a write each is then due again).
const MAX_REMEMBERED: usize = 100_000;

/// The last write per `(user, device)`: the address written and when.
#[derive(Default)]
pub struct DevicesSeen(Mutex<HashMap<(String, String), (String, Instant)>>);

impl DevicesSeen {
    /// Whether this sighting is to be written, remembering it if so.
    fn due(&self, user: &str, device: &str, ip: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (user.to_owned(), device.to_owned());
        if seen.get(&key).is_some_and(|(last_ip, at)| last_ip == ip && at.elapsed() < INTERVAL) {
            return false;
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        seen.insert(key, (ip.to_owned(), Instant::now()));
        true
    }
}

impl Services {
    /// Notes that a device made an authenticated request from `ip`.
    pub fn device_seen(&self, user: &UserId, device: &str, ip: &str) {
        if ip.is_empty() || !self.devices_seen.due(user.as_str(), device, ip) {
            return;
        }
        let Some(services) = self.handle() else { return };
        let (user, device, ip) = (user.to_string(), device.to_owned(), ip.to_owned());
        tokio::spawn(async move {
            if let Err(e) = services.store.touch_device(&user, &device, &ip, now_ms()).await {
                tracing::warn!(error = %e, "could not note when a device was last seen");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_written_once_per_interval_or_on_a_new_address() {
        let seen = DevicesSeen::default();
        assert!(seen.due("@a:x", "D", "10.0.0.1"));
        assert!(!seen.due("@a:x", "D", "10.0.0.1"));
        assert!(seen.due("@a:x", "E", "10.0.0.1"), "another device");
        assert!(seen.due("@a:x", "D", "10.0.0.2"), "another address");
        assert!(!seen.due("@a:x", "D", "10.0.0.2"));
    }
}
