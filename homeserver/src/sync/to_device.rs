//! Sending to-device messages: stored for this server's devices (delivered through `/sync`,
//! deleted once acknowledged), handed to the owning server for other servers' users.

use std::collections::BTreeMap;

use ruma::{
    OwnedUserId, UserId, api::client::to_device::send_event_to_device::v3::Messages, to_device::DeviceIdOrAllDevices,
};
use serde_json::Value;

use crate::services::Services;
use kairan_core::{error::Result, notifier::Audience};

impl Services {
    /// Sends one transaction's messages from `sender`'s `device`. A transaction ID used
    /// before by that device sends nothing again.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        device: &str,
        txn_id: &str,
        event_type: &str,
        messages: &Messages,
    ) -> Result<()> {
        let mut local = Vec::new();
        let mut remote: BTreeMap<OwnedUserId, BTreeMap<String, Value>> = BTreeMap::new();
        for (user, devices) in messages {
            if !self.is_local(user) {
                // Their server delivers them (`m.direct_to_device`), once this transaction is new.
                let entry = remote.entry(user.clone()).or_default();
                for (device, content) in devices {
                    let content: Value = serde_json::from_str(content.json().get()).unwrap_or_default();
                    entry.insert(device.to_string(), content);
                }
                continue;
            }
            for (device, content) in devices {
                let content = content.json().get().to_owned();
                match device {
                    DeviceIdOrAllDevices::DeviceId(d) => local.push((user.to_string(), d.to_string(), content)),
                    DeviceIdOrAllDevices::AllDevices => {
                        for d in self.store.devices(user.as_str()).await? {
                            local.push((user.to_string(), d.device_id, content.clone()));
                        }
                    }
                }
            }
        }
        if let Some(pos) = self.store.put_to_device(sender.as_str(), device, txn_id, event_type, &local).await? {
            self.notifier.advance(pos, Audience::users(local.iter().map(|m| m.0.clone())));
            if !remote.is_empty() {
                self.send_remote_to_device(sender, device, txn_id, event_type, remote).await?;
            }
        }
        Ok(())
    }
}
