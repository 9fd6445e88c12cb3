//! The services of one homeserver, shared by every request handler.

use std::sync::Arc;

use crate::{rooms::RoomCaches, storage::Store, sync::Typing};
use kairan_core::{config::Config, notifier::Notifier, ratelimit::RateLimiter, signing_key::ServerKeys};

/// Everything a handler may call. Services own the rules; storage owns the SQL.
pub struct Services {
    pub config: Config,
    pub store: Store,
    pub keys: ServerKeys,
    pub notifier: Notifier,
    pub rooms: RoomCaches,
    pub typing: Typing,
    pub limiter: RateLimiter,
    pub media: crate::media::MediaService,
    pub uia: std::sync::Arc<crate::accounts::UiaSessions>,
    /// When each device was last written as seen (accounts/seen.rs).
    pub devices_seen: crate::accounts::DevicesSeen,
    pub push: crate::push::PushRuleCache,
    /// Outbound HTTP to push gateways: no redirects, only `push.gateways`.
    pub http: reqwest::Client,
    /// When each user's presence was last written from a sync: `(state, at)`.
    pub presence_seen: std::sync::Mutex<std::collections::HashMap<ruma::OwnedUserId, (String, std::time::Instant)>>,
    /// Administration: run-time server policy and the activity cache (admin/).
    pub admin: crate::admin::AdminState,
    /// Outbound federation: discovery, TLS, signed requests, remote keys.
    pub federation: crate::federation::Federation,
    /// The per-destination senders of the federation queue.
    pub senders: crate::federation::queue::Senders,
    /// Transactions from other servers being processed now.
    pub inbound_txns: crate::federation::inbound::InboundTransactions,
    /// This value itself, for work that outlives the call that starts it.
    me: std::sync::OnceLock<std::sync::Weak<Services>>,
}

/// The axum application state.
pub type AppState = Arc<Services>;

impl Services {
    /// Opens the database (running migrations) and loads or creates the signing key.
    pub async fn start(config: Config) -> anyhow::Result<AppState> {
        let keys = ServerKeys::load_or_create(&config.data_dir)?;
        let store = Store::open(&config.database_url(), config.database.max_connections).await?;
        let pos = store.current_stream_pos().await?;
        let config_for_federation = config.clone();
        let services = Arc::new(Self {
            limiter: RateLimiter::new(&config.rate_limits),
            media: crate::media::MediaService::new(&config, store.clone())?,
            config,
            store,
            keys,
            notifier: Notifier::new(pos),
            rooms: RoomCaches::default(),
            typing: Typing::default(),
            uia: Default::default(),
            devices_seen: Default::default(),
            push: Default::default(),
            http: crate::push::gateway_client(),
            presence_seen: Default::default(),
            admin: Default::default(),
            federation: crate::federation::Federation::new(&config_for_federation)?,
            senders: Default::default(),
            inbound_txns: Default::default(),
            me: Default::default(),
        });
        services.me.set(Arc::downgrade(&services)).ok();
        services.load_admin_policy().await?;
        services.ensure_policy_account().await?;
        services.senders.init(Arc::downgrade(&services));
        services.resume_federation_queue().await?;
        Ok(services)
    }

    /// A shared handle to these services, for a task spawned from a method.
    pub fn handle(&self) -> Option<AppState> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        // Validated when the configuration was loaded.
        <&ruma::ServerName>::try_from(self.config.server_name.as_str()).expect("validated server name")
    }

    /// Whether a user ID belongs to this server.
    pub fn is_local(&self, user_id: &ruma::UserId) -> bool {
        user_id.server_name() == self.server_name()
    }
}
