//! Accounts, sessions and user-interactive authentication.
//!
//! Passwords are hashed with argon2id off the async runtime; access tokens are random
//! and only their SHA-256 is stored.

mod account_data;
mod profile;
mod seen;
mod uia;

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ruma::{
    OwnedUserId, UserId,
    api::client::uiaa::{AuthData, UserIdentifier},
};
use sha2::{Digest, Sha256};

pub use self::{
    seen::DevicesSeen,
    uia::{UiaSessions, UiaStage},
};
use crate::services::Services;
use kairan_core::{
    error::{Error, Result},
    ids::random_device_id,
    time::now_ms,
};

/// A new login: the token to hand to the client once.
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub access_token: String,
}

/// argon2id needs 19 MiB of memory per hash, and the allocator keeps it in the arena of
/// the thread that hashed. On tokio's blocking pool (up to 512 threads) a burst of logins
/// left that much resident per thread (the benchmark saw 1.9 GiB); a few dedicated
/// threads, one per core, reuse theirs. Hashing is CPU-bound, so more would only queue.
struct HashingThreads {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

static HASHING: std::sync::LazyLock<HashingThreads> = std::sync::LazyLock::new(|| {
    let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
    for i in 0..std::thread::available_parallelism().map_or(2, |n| n.get()) {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new().name(format!("kairan-argon2-{i}")).spawn(move || {
            loop {
                let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password hashing thread");
        }
    }
    HashingThreads { jobs: std::sync::Mutex::new(jobs) }
});

/// Runs `f` on a password hashing thread.
async fn on_hashing_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = tx.send(f());
    });
    HASHING
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|e| Error::internal("password hashing", e))?;
    rx.await.map_err(|e| Error::internal("password hashing", e))
}

/// Hashes a password with argon2id.
pub async fn hash_password(password: String) -> Result<String> {
    on_hashing_thread(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal("password hashing", e))
    })
    .await?
}

/// Checks a password against its stored hash, in constant time.
pub async fn verify_password(password: String, hash: String) -> bool {
    on_hashing_thread(move || {
        PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// The stored form of an access token.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token() -> String {
    format!("kai_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// Checks a localpart against the spec's grammar for new user IDs.
pub fn validate_localpart(localpart: &str) -> Result<()> {
    // The server's own accounts (the room policy's sender) live under this prefix; no one
    // may take a name there and pose as them.
    if localpart.starts_with(crate::admin::RESERVED_LOCALPART_PREFIX) {
        return Err(Error::invalid_username(format!(
            "{localpart:?} is reserved for the server's own accounts (names beginning {:?})",
            crate::admin::RESERVED_LOCALPART_PREFIX
        )));
    }
    let ok = !localpart.is_empty()
        && localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_username(format!(
            "{localpart:?} is not a valid username: use lowercase letters, digits and ._=-/+"
        )))
    }
}

impl Services {
    /// The user ID for a localpart or full ID given at login or registration.
    pub fn user_id_from(&self, user: &str) -> Result<OwnedUserId> {
        let id = if user.starts_with('@') {
            user.to_owned()
        } else {
            format!("@{}:{}", user.to_lowercase(), self.server_name())
        };
        let id = OwnedUserId::try_from(id).map_err(|e| Error::invalid_username(format!("invalid user ID: {e}")))?;
        if id.as_str().len() > 255 {
            return Err(Error::invalid_username("user ID is longer than 255 bytes"));
        }
        Ok(id)
    }

    /// Creates an account. Fails with `M_USER_IN_USE` if it exists.
    pub async fn create_account(&self, localpart: &str, password: Option<String>, admin: bool) -> Result<OwnedUserId> {
        validate_localpart(localpart)?;
        let user_id = self.user_id_from(localpart)?;
        let hash = match password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        if !self.store.create_user(user_id.as_str(), hash.as_deref(), admin, localpart, now_ms()).await? {
            return Err(Error::user_in_use(format!("{user_id} already exists")));
        }
        tracing::info!(%user_id, admin, "account created");
        Ok(user_id)
    }

    /// Opens a session (device and token) for a user.
    pub async fn open_session(
        &self,
        user_id: &UserId,
        device_id: Option<String>,
        display_name: Option<&str>,
    ) -> Result<Session> {
        let device_id = device_id.unwrap_or_else(random_device_id);
        let token = new_token();
        self.store.create_session(user_id.as_str(), &device_id, display_name, &token_hash(&token), now_ms()).await?;
        Ok(Session { user_id: user_id.to_owned(), device_id, access_token: token })
    }

    /// Checks a user's password; the same error for an unknown user and a wrong password.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let denied = || Error::forbidden("invalid username or password");
        let user = self.store.user(user_id.as_str()).await?.ok_or_else(denied)?;
        if user.deactivated {
            return Err(Error::user_deactivated("this account has been deactivated"));
        }
        let hash = user.password_hash.ok_or_else(denied)?;
        if verify_password(password.to_owned(), hash).await { Ok(()) } else { Err(denied()) }
    }

    /// The (user, device) an access token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<(OwnedUserId, String)> {
        let (user, device) = self
            .store
            .session_by_token(&token_hash(token))
            .await?
            .ok_or_else(|| Error::unknown_token("unknown or expired access token"))?;
        let user = OwnedUserId::try_from(user).map_err(|e| Error::internal("stored user id", e))?;
        Ok((user, device))
    }

    /// Whether a registration token is valid now (configuration or database).
    pub async fn registration_token_valid(&self, token: &str) -> Result<bool> {
        Ok(self.config.registration.tokens.iter().any(|t| t == token)
            || self.store.registration_token_valid(token, now_ms()).await?)
    }

    pub fn uia(&self) -> &Arc<UiaSessions> {
        &self.uia
    }
}

impl Services {
    /// Requires the user's password as a user-interactive authentication stage: without
    /// it (or with a wrong one) the answer is the 401 that asks for it.
    pub async fn require_password(&self, user: &UserId, data: Option<&AuthData>) -> Result<()> {
        let stages = [UiaStage::Password];
        match data {
            Some(AuthData::Password(p)) => {
                let claimed = match &p.identifier {
                    UserIdentifier::Matrix(id) => self.user_id_from(&id.user)?,
                    _ => return Err(Error::forbidden("only user identifiers are supported")),
                };
                if claimed != user {
                    return Err(Error::forbidden("you can only authenticate as yourself"));
                }
                match self.check_password(user, &p.password).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(self.uia().challenge(p.session.as_deref(), &stages, Some(e))),
                }
            }
            other => Err(self.uia().challenge(other.and_then(|d| d.session()), &stages, None)),
        }
    }

    /// Ends devices: their tokens, and their end-to-end keys (which tells the users who
    /// share rooms to forget them). `None` means every device of the user.
    pub async fn remove_devices(&self, user: &UserId, device_ids: Option<&[String]>) -> Result<()> {
        self.store.delete_devices(user.as_str(), device_ids).await?;
        self.e2ee().forget_device_keys(user, device_ids).await
    }

    /// Ends every device of the user except `keep`.
    pub async fn remove_other_devices(&self, user: &UserId, keep: &str) -> Result<()> {
        let others: Vec<String> =
            self.store.devices(user.as_str()).await?.into_iter().map(|d| d.device_id).filter(|d| d != keep).collect();
        self.remove_devices(user, Some(&others)).await
    }

    /// Deactivates an account: its sessions end at once, and it leaves every room.
    pub async fn deactivate_account(&self, user_id: &UserId) -> Result<()> {
        self.store.set_deactivated(user_id.as_str(), true).await?;
        self.store.set_deactivated_ts(user_id.as_str(), now_ms()).await?;
        self.remove_devices(user_id, None).await?;
        self.store.set_password_hash(user_id.as_str(), None).await?;
        for membership in ["join", "invite"] {
            for room in self.store.rooms_with_membership(user_id.as_str(), membership).await? {
                if let Ok(room_id) = ruma::OwnedRoomId::try_from(room) {
                    let left = self
                        .change_membership(
                            &room_id,
                            user_id,
                            user_id,
                            crate::rooms::MembershipAction::Leave,
                            None,
                            false,
                        )
                        .await;
                    if let Err(e) = left {
                        tracing::warn!(%room_id, %user_id, error = %e, "deactivated user could not leave room");
                    }
                }
            }
        }
        Ok(())
    }
}
