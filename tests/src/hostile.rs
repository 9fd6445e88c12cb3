//! A hostile homeserver: a small fake Matrix server that tests script to attack a real
//! kairan process.
//!
//! It has its own ed25519 key and serves HTTPS on a free loopback port with the
//! [test CA](crate::test_ca)'s leaf certificate; its name is `localhost:PORT`, so kairan
//! reaches it directly at that port and trusts its certificate. It answers
//! `GET /_matrix/key/v2/server` with its self-signed key document, takes kairan's
//! transactions (`PUT /send/{txnId}`, remembering the PDUs) and serves the events it was
//! told to serve at `/event/{eventId}`. Everything else comes from a table the test
//! scripts ([`HostileServer::script`]): fixed answers, slow ones, huge ones, malformed
//! ones, and computed ones such as [`HostileServer::endless_chain`], whose every answer
//! invents new event IDs. Every request is logged, so a test can assert that kairan's
//! work stayed bounded ([`HostileServer::count`], [`HostileServer::fetches`],
//! [`HostileServer::bytes_served`]).
//!
//! Its users join rooms on kairan like any remote server's (`make_join`/`send_join`,
//! [`HostileServer::join`]); the returned [`JoinedRoom`] builds event templates on the
//! room's real state, which [`HostileServer::sign`] hashes and signs (ruma's own
//! functions: content hash, signatures, reference-hash event ID) and
//! [`HostileServer::send_transaction`] sends with X-Matrix authentication.
//!
//! ```no_run
//! # async fn demo(kairan: &kairan_tests::TestServer, room_id: &str) -> anyhow::Result<()> {
//! use kairan_tests::hostile::{Answer, HostileServer};
//! let hostile = HostileServer::start().await?;
//! let room = hostile.join(kairan, room_id, "mallory").await?;
//! hostile.script_fetches(Answer::slow(std::time::Duration::from_secs(20), Answer::not_found()));
//! let pdu = hostile.sign(&room.rules, room.message(&room.user_id, "hello"))?;
//! hostile.send_transaction(kairan, "t1", &[pdu.pdu]).await?;
//! # Ok(()) }
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{Method, Uri, header},
    response::Response as HttpResponse,
};
use base64::Engine as _;
use ruma::{CanonicalJsonObject, RoomVersionId, room_version_rules::RoomVersionRules, signatures::Ed25519KeyPair};
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{Response, TestServer, enc, test_ca};

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub const EVENT_PATH: &str = "/_matrix/federation/v1/event/";
/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
pub const EVENT_AUTH_PATH: &str = "/_matrix/federation/v1/event_auth/";
/// `GET /_matrix/federation/v1/state/{roomId}`.
pub const STATE_PATH: &str = "/_matrix/federation/v1/state/";
/// `GET /_matrix/federation/v1/state_ids/{roomId}`.
pub const STATE_IDS_PATH: &str = "/_matrix/federation/v1/state_ids/";
/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`.
pub const MISSING_EVENTS_PATH: &str = "/_matrix/federation/v1/get_missing_events/";
/// `GET /_matrix/federation/v1/backfill/{roomId}`.
pub const BACKFILL_PATH: &str = "/_matrix/federation/v1/backfill/";
/// Every path by which a server fetches room data (events, auth chains, state, gaps,
/// history) from another: what kairan asks when a PDU refers to events it lacks.
pub const FETCH_PATHS: [&str; 6] =
    [EVENT_PATH, EVENT_AUTH_PATH, STATE_PATH, STATE_IDS_PATH, MISSING_EVENTS_PATH, BACKFILL_PATH];

/// How long a request to kairan may take: longer than any attack a test waits out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A request the hostile server received, as a scripted answer sees it. `path` is
/// percent-decoded (event IDs read as `$…`, room IDs as `!…`).
#[derive(Clone, Debug)]
pub struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Bytes,
}

/// An answer of the scripted table.
#[derive(Clone)]
pub enum Answer {
    /// A JSON body with this status.
    Json(u16, Value),
    /// These exact bytes, with this status and content type (malformed bodies).
    Raw { status: u16, content_type: &'static str, body: Bytes },
    /// A 200 whose body starts like a PDU answer and goes on for this many bytes,
    /// streamed without a `Content-Length`, so only reading tells how long it is.
    Huge(u64),
    /// The inner answer after a delay (headers included: nothing is sent meanwhile).
    Delay(Duration, Box<Answer>),
    /// Computed for each request.
    With(Arc<dyn Fn(&Incoming) -> Answer + Send + Sync>),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(status, v) => write!(f, "Json({status}, {v})"),
            Self::Raw { status, body, .. } => write!(f, "Raw({status}, {} bytes)", body.len()),
            Self::Huge(n) => write!(f, "Huge({n})"),
            Self::Delay(d, a) => write!(f, "Delay({d:?}, {a:?})"),
            Self::With(_) => write!(f, "With(..)"),
        }
    }
}

impl Answer {
    /// 200 with a JSON body.
    pub fn json(value: Value) -> Self {
        Self::Json(200, value)
    }

    /// 404 `M_NOT_FOUND`.
    pub fn not_found() -> Self {
        Self::Json(404, json!({ "errcode": "M_NOT_FOUND", "error": "nothing here" }))
    }

    /// Raw bytes with a status and content type.
    pub fn raw(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self::Raw { status, content_type, body: body.into() }
    }

    /// A streamed 200 body of `bytes` bytes.
    pub fn huge(bytes: u64) -> Self {
        Self::Huge(bytes)
    }

    /// `then`, after `delay`.
    pub fn slow(delay: Duration, then: Answer) -> Self {
        Self::Delay(delay, Box::new(then))
    }

    /// An answer computed from each request.
    pub fn with(f: impl Fn(&Incoming) -> Answer + Send + Sync + 'static) -> Self {
        Self::With(Arc::new(f))
    }

    /// Each request gets the next of `answers`, round and round.
    pub fn cycle(answers: Vec<Answer>) -> Self {
        let next = AtomicUsize::new(0);
        Self::with(move |_| answers[next.fetch_add(1, Ordering::Relaxed) % answers.len()].clone())
    }

    /// Bodies that are not what they claim to be: truncated JSON, HTML, JSON of the wrong
    /// shape, nesting deeper than any parser's recursion limit, invalid UTF-8, an empty
    /// 200, and a 500; [`cycle`](Self::cycle) them to try each.
    pub fn malformed() -> Vec<Answer> {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        vec![
            Self::raw(200, "application/json", &br#"{"origin":"x","pdus":[{"type":"m.room.mem"#[..]),
            Self::raw(200, "text/html", &b"<html><body>502 Bad Gateway</body></html>"[..]),
            Self::json(json!({ "pdus": "not a list", "events": 7, "auth_chain": { "a": 1 }, "pdu_ids": [1, 2] })),
            Self::json(json!({ "pdus": [null, 1, "x", []], "events": [null, "x"], "auth_chain": [17] })),
            Self::raw(200, "application/json", deep),
            Self::raw(200, "application/json", &b"{\"pdus\":[\"\xff\xfe\xc3\x28\"]}"[..]),
            Self::raw(200, "application/json", Bytes::new()),
            Self::Json(500, json!({ "errcode": "M_UNKNOWN", "error": "internal" })),
        ]
    }
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: Method,
    /// Percent-decoded.
    pub path: String,
    pub query: String,
    pub at: Instant,
    bytes: Arc<AtomicU64>,
}

impl Logged {
    /// The bytes of the answer's body handed to the connection so far.
    pub fn bytes_served(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A signed PDU and its event ID (the reference hash).
#[derive(Clone, Debug)]
pub struct SignedPdu {
    pub event_id: String,
    pub pdu: Value,
}

/// A kairan room the hostile server's user joined: its version and the state the
/// `send_join` answer gave, to build events on.
#[derive(Clone, Debug)]
pub struct JoinedRoom {
    pub room_id: String,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// The hostile user who joined.
    pub user_id: String,
    pub join_event_id: String,
    pub join_depth: u64,
    /// `(type, state_key)` → event ID, the join included.
    pub state: BTreeMap<(String, String), String>,
    /// The PDUs of the state and its auth chain (and the join), by event ID.
    pub pdus: HashMap<String, Value>,
}

impl JoinedRoom {
    /// The event ID of a state event.
    pub fn state_id(&self, kind: &str, state_key: &str) -> Option<&str> {
        self.state.get(&(kind.to_owned(), state_key.to_owned())).map(String::as_str)
    }

    /// The auth events of an ordinary event by `sender`: the create event (before room
    /// v12, where the room ID names it), the power levels and the sender's membership.
    pub fn auth_events(&self, sender: &str) -> Vec<String> {
        let mut ids = Vec::new();
        if !self.rules.authorization.room_create_event_id_as_room_id {
            ids.extend(self.state_id("m.room.create", ""));
        }
        ids.extend(self.state_id("m.room.power_levels", ""));
        ids.extend(self.state_id("m.room.member", sender));
        ids.into_iter().map(str::to_owned).collect()
    }

    /// An unsigned event template by `sender` on top of the hostile user's join.
    pub fn event(&self, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> Value {
        let mut event = json!({
            "room_id": self.room_id,
            "sender": sender,
            "origin_server_ts": unique_ts(),
            "type": kind,
            "content": content,
            "prev_events": [self.join_event_id],
            "auth_events": self.auth_events(sender),
            "depth": self.join_depth + 1,
        });
        if let Some(k) = state_key {
            event["state_key"] = k.into();
        }
        event
    }

    /// An `m.text` message template.
    pub fn message(&self, sender: &str, body: &str) -> Value {
        self.event(sender, "m.room.message", None, json!({ "msgtype": "m.text", "body": body }))
    }

    /// A redaction of `target`: `redacts` in the content from room v11 on, and at the
    /// top level too (where earlier versions read it; v11 ignores it).
    pub fn redaction(&self, sender: &str, target: &str) -> Value {
        let content = if self.rules.redaction.content_field_redacts { json!({ "redacts": target }) } else { json!({}) };
        let mut event = self.event(sender, "m.room.redaction", None, content);
        event["redacts"] = target.into();
        event
    }
}

/// What the handler shares with the test.
struct Shared {
    name: String,
    key: Arc<Ed25519KeyPair>,
    /// Scripted answers, the latest first.
    script: Mutex<Vec<(Option<Method>, String, Answer)>>,
    log: Mutex<Vec<Logged>>,
    /// Events answered at `/event/{eventId}`.
    served: Mutex<HashMap<String, Value>>,
    /// PDUs kairan sent in its transactions, by event ID.
    received: Mutex<HashMap<String, Value>>,
    /// Room versions of the rooms joined, to compute the IDs of received PDUs.
    rooms: Mutex<HashMap<String, RoomVersionRules>>,
    /// Woken on every request and every PDU received.
    changed: Notify,
}

/// The hostile server. Dropping it stops it.
pub struct HostileServer {
    shared: Arc<Shared>,
    http: reqwest::Client,
    task: JoinHandle<()>,
}

impl fmt::Debug for HostileServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostileServer").field("name", &self.shared.name).finish()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileServer {
    /// Listens on a free loopback port (TLS with the test CA's leaf) with a new key.
    pub async fn start() -> anyhow::Result<Self> {
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let name = format!("localhost:{}", tcp.local_addr()?.port());
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "hostile".to_owned())?;
        let shared = Arc::new(Shared {
            name,
            key: Arc::new(key),
            script: Mutex::default(),
            log: Mutex::default(),
            served: Mutex::default(),
            received: Mutex::default(),
            rooms: Mutex::default(),
            changed: Notify::new(),
        });
        let app = Router::new().fallback(handle).layer(DefaultBodyLimit::disable()).with_state(shared.clone());
        let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(server_tls()?) };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder()
            .tls_certs_only([test_ca().reqwest_certificate()?])
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self { shared, http, task })
    }

    /// `localhost:PORT`.
    pub fn server_name(&self) -> &str {
        &self.shared.name
    }

    /// `@localpart:localhost:PORT`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.shared.name)
    }

    /// The signing key (its version is `hostile`).
    pub fn key(&self) -> &Ed25519KeyPair {
        &self.shared.key
    }

    /// Answers requests whose (percent-decoded) path starts with `prefix`, and whose
    /// method is `method` if given, with `answer`. A later script wins over an earlier
    /// one; scripts win over the built-in answers (keys, `/send`, served events).
    pub fn script(&self, method: Option<Method>, prefix: &str, answer: Answer) {
        self.shared.script.lock().unwrap().insert(0, (method, prefix.to_owned(), answer));
    }

    /// Scripts every path of [`FETCH_PATHS`] with `answer`.
    pub fn script_fetches(&self, answer: Answer) {
        for path in FETCH_PATHS {
            self.script(None, path, answer.clone());
        }
    }

    /// Forgets every script.
    pub fn clear_script(&self) {
        self.shared.script.lock().unwrap().clear();
    }

    /// Makes `/event/{eventId}` answer this event.
    pub fn serve(&self, pdu: &SignedPdu) {
        self.shared.served.lock().unwrap().insert(pdu.event_id.clone(), pdu.pdu.clone());
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// How many requests each path received.
    pub fn per_path(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.shared.log.lock().unwrap().iter() {
            *counts.entry(r.path.clone()).or_default() += 1;
        }
        counts
    }

    /// How many requests had a path starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.shared.log.lock().unwrap().iter().filter(|r| r.path.starts_with(prefix)).count()
    }

    /// How many requests went to any of [`FETCH_PATHS`].
    pub fn fetches(&self) -> usize {
        self.shared.log.lock().unwrap().iter().filter(|r| is_fetch(&r.path)).count()
    }

    /// The body bytes handed out so far to requests whose path starts with `prefix`.
    pub fn bytes_served(&self, prefix: &str) -> u64 {
        self.shared.log.lock().unwrap().iter().filter(|r| r.path.starts_with(prefix)).map(Logged::bytes_served).sum()
    }

    /// The body bytes handed out so far on [`FETCH_PATHS`].
    pub fn fetch_bytes_served(&self) -> u64 {
        self.shared.log.lock().unwrap().iter().filter(|r| is_fetch(&r.path)).map(Logged::bytes_served).sum()
    }

    /// Waits until at least `n` requests went to [`FETCH_PATHS`].
    pub async fn wait_for_fetches(&self, n: usize, deadline: Duration) -> anyhow::Result<()> {
        self.wait_until(&format!("{n} fetch requests"), deadline, |s| {
            (s.log.lock().unwrap().iter().filter(|r| is_fetch(&r.path)).count() >= n).then_some(())
        })
        .await
    }

    /// Waits until kairan sent this PDU in a transaction; returns it.
    pub async fn wait_for_pdu(&self, event_id: &str, deadline: Duration) -> anyhow::Result<Value> {
        self.wait_until(&format!("{event_id} from kairan"), deadline, |s| {
            s.received.lock().unwrap().get(event_id).cloned()
        })
        .await
    }

    async fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Shared) -> Option<T>,
    ) -> anyhow::Result<T> {
        let until = Instant::now() + deadline;
        loop {
            // Created before the check, so a change between the two still wakes it.
            let changed = self.shared.changed.notified();
            if let Some(value) = check(&self.shared) {
                return Ok(value);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{what}: not the case within {deadline:?}");
            }
            let _ = tokio::time::timeout(left, changed).await;
        }
    }

    /// Hashes and signs an event template with this server's key.
    pub fn sign(&self, rules: &RoomVersionRules, template: Value) -> anyhow::Result<SignedPdu> {
        Self::sign_as(&self.shared.name, &self.shared.key, rules, template)
    }

    /// Hashes and signs an event template as `origin` with `key` (which may be a forger's).
    pub fn sign_as(
        origin: &str,
        key: &Ed25519KeyPair,
        rules: &RoomVersionRules,
        template: Value,
    ) -> anyhow::Result<SignedPdu> {
        let mut obj: CanonicalJsonObject = serde_json::from_value(template).context("not canonical JSON")?;
        ruma::signatures::hash_and_sign_event(origin, key, &mut obj, &rules.redaction)?;
        Ok(SignedPdu { event_id: event_id(&obj, rules)?, pdu: serde_json::to_value(&obj)? })
    }

    /// An answer for every path of [`FETCH_PATHS`] that never runs out: each event it
    /// hands out is newly made up, well-formed and signed by this server, and names
    /// `fan_out` auth events and `fan_out` prev events that exist nowhere, so that a
    /// server following references fetches for ever. (No made-up event can have the ID it
    /// was asked for: event IDs are hashes.)
    pub fn endless_chain(&self, room: &JoinedRoom, fan_out: usize) -> Answer {
        let (name, key, rules) = (self.shared.name.clone(), self.shared.key.clone(), room.rules.clone());
        let (room_id, sender) = (room.room_id.clone(), room.user_id.clone());
        let depth = room.join_depth;
        Answer::with(move |incoming| {
            let invent = || {
                let template = json!({
                    "room_id": room_id,
                    "sender": sender,
                    "origin_server_ts": unique_ts(),
                    "type": "m.room.member",
                    "state_key": sender,
                    "content": { "membership": "join" },
                    "prev_events": invented_ids(fan_out),
                    "auth_events": invented_ids(fan_out),
                    "depth": depth + 1,
                });
                Self::sign_as(&name, &key, &rules, template).map(|s| s.pdu).unwrap_or(Value::Null)
            };
            let many = || (0..fan_out).map(|_| invent()).collect::<Vec<_>>();
            let path = incoming.path.as_str();
            let body = if path.starts_with(EVENT_PATH) {
                json!({ "origin": name, "origin_server_ts": now_ms(), "pdus": [invent()] })
            } else if path.starts_with(EVENT_AUTH_PATH) {
                json!({ "auth_chain": many() })
            } else if path.starts_with(STATE_IDS_PATH) {
                json!({ "pdu_ids": invented_ids(fan_out), "auth_chain_ids": invented_ids(fan_out) })
            } else if path.starts_with(STATE_PATH) {
                json!({ "pdus": many(), "auth_chain": many() })
            } else if path.starts_with(MISSING_EVENTS_PATH) {
                json!({ "events": many() })
            } else if path.starts_with(BACKFILL_PATH) {
                json!({ "origin": name, "origin_server_ts": now_ms(), "pdus": many() })
            } else {
                return Answer::not_found();
            };
            Answer::json(body)
        })
    }

    /// A federation request to `to`, signed with X-Matrix as this server.
    pub async fn request(
        &self,
        to: &TestServer,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        let signer = (self.shared.name.as_str(), to.server_name(), &*self.shared.key);
        crate::signed::federation_request(&self.http, to, method, path, body, Some(signer)).await
    }

    /// `PUT /_matrix/federation/v1/send/{txn_id}` with these PDUs, from this server.
    pub async fn send_transaction(&self, to: &TestServer, txn_id: &str, pdus: &[Value]) -> anyhow::Result<Response> {
        let body = json!({ "origin": self.shared.name, "origin_server_ts": now_ms(), "pdus": pdus, "edus": [] });
        self.send_transaction_body(to, txn_id, &body).await
    }

    /// `PUT /_matrix/federation/v1/send/{txn_id}` with any body (signed as this server).
    pub async fn send_transaction_body(&self, to: &TestServer, txn_id: &str, body: &Value) -> anyhow::Result<Response> {
        self.request(to, Method::PUT, &format!("/_matrix/federation/v1/send/{}", enc(txn_id)), Some(body)).await
    }

    /// Joins `localpart` of this server to a room `to` is in (`make_join`, then
    /// `send_join` of the template hashed and signed here).
    pub async fn join(&self, to: &TestServer, room_id: &str, localpart: &str) -> anyhow::Result<JoinedRoom> {
        let user_id = self.user_id(localpart);
        let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=11&ver=12", enc(room_id), enc(&user_id));
        let made = self.request(to, Method::GET, &path, None).await?.ok().context("make_join")?;
        let version = RoomVersionId::try_from(made["room_version"].as_str().context("make_join: room_version")?)?;
        let rules = version.rules().with_context(|| format!("room version {version} has no rules"))?;
        self.shared.rooms.lock().unwrap().insert(room_id.to_owned(), rules.clone());
        let mut template = made["event"].clone();
        // Kairan's template names kairan as `origin`; the joining server sends the event.
        template.as_object_mut().context("make_join: event is not an object")?.remove("origin");
        template["origin_server_ts"] = unique_ts().into();
        let join = self.sign(&rules, template)?;
        let path = format!("/_matrix/federation/v2/send_join/{}/{}", enc(room_id), enc(&join.event_id));
        let joined = self.request(to, Method::PUT, &path, Some(&join.pdu)).await?.ok().context("send_join")?;

        let mut state = BTreeMap::new();
        let mut pdus = HashMap::new();
        for (list, is_state) in [("state", true), ("auth_chain", false)] {
            for pdu in joined[list].as_array().with_context(|| format!("send_join: no {list}"))? {
                let obj: CanonicalJsonObject = serde_json::from_value(pdu.clone())?;
                let id = event_id(&obj, &rules)?;
                if is_state && let (Some(t), Some(k)) = (pdu["type"].as_str(), pdu["state_key"].as_str()) {
                    state.insert((t.to_owned(), k.to_owned()), id.clone());
                }
                pdus.insert(id, pdu.clone());
            }
        }
        state.insert(("m.room.member".to_owned(), user_id.clone()), join.event_id.clone());
        pdus.insert(join.event_id.clone(), join.pdu.clone());
        let join_depth = join.pdu["depth"].as_u64().context("the join has no depth")?;
        Ok(JoinedRoom {
            room_id: room_id.to_owned(),
            version,
            rules,
            user_id,
            join_event_id: join.event_id,
            join_depth,
            state,
            pdus,
        })
    }
}

impl Shared {
    /// The built-in answers: this server's keys, acknowledgement of kairan's
    /// transactions, the events it serves; 404 for the rest.
    fn default_answer(&self, incoming: &Incoming) -> Answer {
        let path = incoming.path.as_str();
        if path.starts_with("/_matrix/key/v2/server") {
            return match self.key_document() {
                Ok(doc) => Answer::json(doc),
                Err(e) => Answer::Json(500, json!({ "errcode": "M_UNKNOWN", "error": e.to_string() })),
            };
        }
        if incoming.method == Method::PUT && path.starts_with("/_matrix/federation/v1/send/") {
            self.record_received(&incoming.body);
            return Answer::json(json!({ "pdus": {} }));
        }
        if let Some(id) = path.strip_prefix(EVENT_PATH)
            && let Some(pdu) = self.served.lock().unwrap().get(id)
        {
            return Answer::json(json!({ "origin": self.name, "origin_server_ts": now_ms(), "pdus": [pdu] }));
        }
        if path == "/_matrix/federation/v1/version" {
            return Answer::json(json!({ "server": { "name": "kairan-tests hostile", "version": "0" } }));
        }
        Answer::not_found()
    }

    /// `GET /_matrix/key/v2/server`: the key, self-signed, valid for a day.
    fn key_document(&self) -> anyhow::Result<Value> {
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.key.public_key());
        let mut doc: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": self.name,
            "valid_until_ts": now_ms() + 24 * 3600 * 1000,
            "verify_keys": { format!("ed25519:{}", self.key.version()): { "key": public } },
            "old_verify_keys": {},
        }))?;
        ruma::signatures::sign_json(&self.name, &*self.key, &mut doc)?;
        Ok(serde_json::to_value(doc)?)
    }

    fn record_received(&self, body: &[u8]) {
        let Ok(txn) = serde_json::from_slice::<Value>(body) else { return };
        let rooms = self.rooms.lock().unwrap();
        let mut received = self.received.lock().unwrap();
        for pdu in txn["pdus"].as_array().into_iter().flatten() {
            let Some(rules) = pdu["room_id"].as_str().and_then(|r| rooms.get(r)) else { continue };
            let Ok(obj) = serde_json::from_value::<CanonicalJsonObject>(pdu.clone()) else { continue };
            if let Ok(id) = event_id(&obj, rules) {
                received.insert(id, pdu.clone());
            }
        }
        drop((rooms, received));
        self.changed.notify_waiters();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, body: Bytes) -> HttpResponse {
    let incoming =
        Incoming { method, path: percent_decode(uri.path()), query: uri.query().unwrap_or_default().to_owned(), body };
    let bytes = Arc::new(AtomicU64::new(0));
    shared.log.lock().unwrap().push(Logged {
        method: incoming.method.clone(),
        path: incoming.path.clone(),
        query: incoming.query.clone(),
        at: Instant::now(),
        bytes: bytes.clone(),
    });
    // Before answering: a slow answer's request is already visible to the test.
    shared.changed.notify_waiters();
    let scripted = shared
        .script
        .lock()
        .unwrap()
        .iter()
        .find(|(m, prefix, _)| m.as_ref().is_none_or(|m| *m == incoming.method) && incoming.path.starts_with(prefix))
        .map(|(_, _, answer)| answer.clone());
    let answer = scripted.unwrap_or_else(|| shared.default_answer(&incoming));
    render(answer, &incoming, bytes).await
}

async fn render(mut answer: Answer, incoming: &Incoming, served: Arc<AtomicU64>) -> HttpResponse {
    loop {
        let (status, content_type, body) = match answer {
            Answer::Delay(delay, then) => {
                tokio::time::sleep(delay).await;
                answer = *then;
                continue;
            }
            Answer::With(f) => {
                answer = f(incoming);
                continue;
            }
            // Bodies sent whole count at once; a streamed one counts itself as it goes.
            Answer::Json(status, value) => {
                let text = value.to_string();
                served.fetch_add(text.len() as u64, Ordering::Relaxed);
                (status, "application/json", Body::from(text))
            }
            Answer::Raw { status, content_type, body } => {
                served.fetch_add(body.len() as u64, Ordering::Relaxed);
                (status, content_type, Body::from(body))
            }
            Answer::Huge(total) => (200, "application/json", huge_body(total, served.clone())),
        };
        return HttpResponse::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .expect("a response from a valid status and header");
    }
}

/// A JSON-looking body of `total` bytes, streamed in 64 KiB chunks; `served` counts the
/// chunks as the connection takes them, which it stops doing when the reader stops.
fn huge_body(total: u64, served: Arc<AtomicU64>) -> Body {
    let head = Bytes::from_static(br#"{"origin":"x","origin_server_ts":1,"pdus":[{"content":{"body":""#);
    let filler = Bytes::from(vec![b'a'; 64 * 1024]);
    let stream = futures::stream::unfold(0u64, move |sent| {
        let next = if sent == 0 { head.clone() } else { filler.clone() };
        let served = served.clone();
        async move {
            if sent >= total {
                return None;
            }
            served.fetch_add(next.len() as u64, Ordering::Relaxed);
            Some((Ok::<_, Infallible>(next.clone()), sent + next.len() as u64))
        }
    });
    Body::from_stream(stream)
}

/// A TLS listener for `axum::serve`, with the test CA's leaf certificate.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                // Out of descriptors and the like: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // Only kairan connects, so handshakes one at a time hold up no one.
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(stream)).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn server_tls() -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let ca = test_ca();
    let certs = CertificateDer::pem_file_iter(&ca.cert_pem)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&ca.key_pem)?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The event ID of a PDU: `$` and its reference hash.
pub fn event_id(pdu: &CanonicalJsonObject, rules: &RoomVersionRules) -> anyhow::Result<String> {
    Ok(format!("${}", ruma::signatures::reference_hash(pdu, rules)?))
}

/// `n` event IDs of the right form that no event has.
pub fn invented_ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("${}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())))
        .collect()
}

fn is_fetch(path: &str) -> bool {
    FETCH_PATHS.iter().any(|p| path.starts_with(p))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// The current time in ms, never twice the same: two templates made in the same
/// millisecond with the same content must still be two events.
fn unique_ts() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// `%XX` decoding of a URI path (invalid escapes are kept as they are).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(percent_decode("/event/%24abc%2Bd"), "/event/$abc+d");
        assert_eq!(percent_decode("/bad%zz%2"), "/bad%zz%2");
    }

    #[test]
    fn invented_ids_are_event_ids() {
        for id in invented_ids(3) {
            ruma::OwnedEventId::try_from(id.as_str()).unwrap();
            assert_eq!(id.len(), 44);
        }
    }

    #[test]
    fn timestamps_are_unique() {
        let a = unique_ts();
        assert!(unique_ts() > a);
    }
}
