//! What the fuzz targets share: the spec's test signing key, and one homeserver's
//! services per fuzzing process for the targets that go through `Services`.
//!
//! The server is named `domain` and signs with the key of the spec's test vectors
//! (appendix "Cryptographic test vectors"), so the spec's signed events verify as this
//! server's own, and a target can sign what it builds: signature checks then pass and the
//! checks behind them are reached. Its federation allowlist names only itself, so no key
//! is ever fetched over the network, whatever server an input names.

use std::{path::PathBuf, sync::OnceLock};

use base64::Engine;
use kairan_core::config::Config;
use kairan_homeserver::{Services, services::AppState};
use ruma::{
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet},
};

pub const SERVER_NAME: &str = "domain";
/// The seed of the spec's test signing key (unpadded, with trailing bits set).
pub const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
pub const SPEC_KEY_VERSION: &str = "1";
pub const SPEC_PUBLIC_KEY: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

/// The spec's signing key, without a server (for the targets that need no database).
pub fn spec_key_pair() -> Ed25519KeyPair {
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let seed = lenient.decode(SPEC_SEED).expect("the spec's seed is base64");
    // PKCS#8 v1 for an ed25519 private key: a fixed prefix, then the 32-byte seed.
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&seed);
    Ed25519KeyPair::from_der(&der, SPEC_KEY_VERSION.to_owned()).expect("the spec's key loads")
}

/// `domain`'s public key, as `ruma::signatures` wants it.
pub fn spec_public_keys() -> PublicKeyMap {
    let mut set = PublicKeySet::new();
    set.insert(format!("ed25519:{SPEC_KEY_VERSION}"), Base64::parse(SPEC_PUBLIC_KEY).expect("base64"));
    PublicKeyMap::from([(SERVER_NAME.to_owned(), set)])
}

/// The rules of every room version kairan accepts events of.
pub fn supported_rules() -> Vec<RoomVersionRules> {
    kairan_homeserver::rooms::SUPPORTED_VERSIONS
        .iter()
        .map(|v| kairan_homeserver::rooms::version_rules(v).expect("supported version"))
        .collect()
}

/// One homeserver, started once per process, with a user whose token is valid.
pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub state: AppState,
    /// An access token of `@fuzz:domain`.
    pub token: String,
}

pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(start)
}

fn start() -> Harness {
    let dir = scratch_dir();
    // Written before the start, so the server loads it instead of making a key of its own.
    std::fs::write(dir.join("signing.key"), format!("ed25519 {SPEC_KEY_VERSION} {SPEC_SEED}\n"))
        .expect("writing the signing key");
    let mut config = Config::default();
    config.server_name = SERVER_NAME.to_owned();
    config.data_dir = dir;
    // Rate limits would soon refuse every input before the code under test sees it.
    config.rate_limits.enabled = false;
    // Small, so that inputs of libFuzzer's sizes reach the body limit too.
    config.limits.max_request_bytes = 2048;
    config.federation.allowlist = vec![SERVER_NAME.to_owned()];
    // One thread: every input runs to its end before the next starts, and nothing of the
    // server runs between inputs.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let (state, token) = runtime.block_on(async {
        let state = Services::start(config).await.expect("the homeserver starts");
        let user = state.create_account("fuzz", None, false).await.expect("creating @fuzz:domain");
        let session = state.open_session(&user, Some("FUZZ".to_owned()), None).await.expect("opening a session");
        (state, session.access_token)
    });
    Harness { runtime, state, token }
}

/// A fresh data directory for this process under the system's temporary directory. Those
/// of earlier processes that have ended are removed: libFuzzer ends a process with
/// `exit`, so nothing would remove them at their end.
fn scratch_dir() -> PathBuf {
    let root = std::env::temp_dir().join("kairan-fuzz");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if pid.parse::<u32>().is_ok() && !PathBuf::from("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}

/// Whether `KAIRAN_FUZZ_DEBUG` is set: the targets then say what became of each input,
/// to check that the seeds reach the code they were written for (run a target on its
/// corpus with `-runs=0`).
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("KAIRAN_FUZZ_DEBUG").is_some())
}
