// An encrypted conversation across two homeservers, driven by matrix-js-sdk with its Rust
// crypto (the SDK and crypto under Element Web), as a third-party client would drive it.
//
// Input, as JSON in argv[2] or on stdin:
//   { "alice": { "baseUrl": "...", "user": "alice", "password": "..." },
//     "bob":   { "baseUrl": "...", "user": "bob",   "password": "..." },
//     "timeoutMs": 60000 }
// alice is the resident side (she creates the room), bob the joiner. Both sides bootstrap
// cross-signing and verify each other with SAS in the room; bob sets up secret storage and key
// backup; five messages go each way and are decrypted by the other side; then a second device
// of bob logs in, takes the cross-signing keys and the backup key from secret storage, restores
// the backup and decrypts the earlier messages, and receives a new message of alice.
//
// Every wait is bounded (timeoutMs, default 60 s). Each step done prints `ok   <step>`; on
// failure it prints `FAILED at step "<step>": <what was seen>` and exits 1; on success it
// prints one line `SUMMARY {json}` and exits 0. The SDK's own log (a few hundred lines, its
// Rust crypto's warnings among them) goes to the same output, left on because it is what
// explains a failure. Run by tests/tests/e2e/federation_js_sdk.rs; installed by
// scripts/js-sdk.sh.

// matrix-js-sdk 43 declares Node 22, and the one Node 22 feature it needs that Node 20 (on the
// project's machines) lacks is Promise.withResolvers. This shim is that feature, as specified;
// it must run before the SDK is loaded, hence the dynamic imports below.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

const sdk = await import("matrix-js-sdk");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { CryptoEvent, EventShieldColour, VerificationPhase, VerifierEvent } = cryptoApi;

const started = Date.now();
const input = JSON.parse(process.argv[2] ?? (await readStdin()));
const TIMEOUT = input.timeoutMs ?? 60_000;
const steps = [];
// Every client logged in so far, whose sync health a failure message reports.
const clients = [];
let currentStep = "reading the input";

class StepFailure extends Error {}

function fail(message) {
    throw new StepFailure(message);
}

async function readStdin() {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    return Buffer.concat(chunks).toString("utf8");
}

async function step(name, fn) {
    currentStep = name;
    const t0 = Date.now();
    const result = await fn();
    steps.push({ step: name, ms: Date.now() - t0 });
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    return result;
}

// Polls `check` until it returns something other than undefined; `describe` says what was
// seen last, for the message when the deadline passes. Polling (every 100 ms, no request
// of its own) reads the SDK's local state, which its sync loop keeps current.
async function waitFor(what, check, describe = () => "", timeout = TIMEOUT) {
    const until = Date.now() + timeout;
    for (;;) {
        const value = await check();
        if (value !== undefined) return value;
        if (Date.now() >= until) fail(`${what}: not the case within ${timeout} ms; last seen: ${await describe()}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

// Bounds a promise the SDK gives (a request, a verification) by the same timeout.
async function within(what, promise, timeout = TIMEOUT) {
    let timer;
    const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new StepFailure(`${what}: no result within ${timeout} ms`)), timeout);
    });
    try {
        return await Promise.race([promise, deadline]);
    } finally {
        clearTimeout(timer);
    }
}

// What a request error says, with the HTTP status and the Matrix error body.
function describeError(e) {
    if (e instanceof StepFailure) return e.message;
    const parts = [String(e?.stack ?? e)];
    if (e?.httpStatus !== undefined) parts.push(`HTTP ${e.httpStatus}`);
    if (e?.url) parts.push(`URL ${e.url}`);
    if (e?.data) parts.push(`body ${JSON.stringify(e.data)}`);
    return parts.join("; ");
}

// The secret storage key, as the user would type their recovery key on each new device.
const secretStorageKeys = new Map();
const cryptoCallbacks = {
    getSecretStorageKey: async ({ keys }) => {
        for (const keyId of Object.keys(keys)) {
            const key = secretStorageKeys.get(keyId);
            if (key) return [keyId, key];
        }
        return null;
    },
    cacheSecretStorageKey: (keyId, _keyInfo, key) => secretStorageKeys.set(keyId, key),
};

// Logs in (a new device), starts Rust crypto with an in-memory store and the sync loop, and
// waits for the first sync.
async function login(who, { baseUrl, user, password }, deviceName) {
    const anonymous = sdk.createClient({ baseUrl });
    const response = await within(
        `${who} logging in`,
        anonymous.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user },
            password,
            initial_device_display_name: deviceName,
        }),
    );
    const client = sdk.createClient({
        baseUrl,
        accessToken: response.access_token,
        userId: response.user_id,
        deviceId: response.device_id,
        cryptoCallbacks,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    // The SDK retries a failing /sync for ever, quietly: remember the last failure, which
    // is what a wait on this client reports when it times out.
    const prepared = new Promise((resolve, reject) => {
        client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED") resolve();
            if (state === "ERROR" || state === "RECONNECTING") {
                client.kairanSyncError = `${describeError(data?.error)} (at ${new Date().toISOString()})`;
                if (state === "ERROR" && !client.kairanPrepared)
                    reject(new StepFailure(`${who}'s first sync failed: ${client.kairanSyncError}`));
            }
            if (state === "SYNCING" || state === "PREPARED") client.kairanPrepared = true;
        });
    });
    await client.startClient({ initialSyncLimit: 50 });
    await within(`${who}'s first sync`, prepared);
    client.kairanName = who;
    clients.push(client);
    client.kairanPassword = password;
    client.kairanLocalpart = user;
    return client;
}

// Uploads the cross-signing keys, completing user-interactive auth with the password when
// the server asks for it (the first upload is allowed without, MSC3967).
function bootstrapCrossSigning(client) {
    return within(
        `${client.kairanName} bootstrapping cross-signing`,
        client.getCrypto().bootstrapCrossSigning({
            authUploadDeviceSigningKeys: async (makeRequest) => {
                try {
                    return await makeRequest(null);
                } catch (e) {
                    if (e?.httpStatus !== 401 || !e?.data?.flows) throw e;
                    return await makeRequest({
                        type: "m.login.password",
                        identifier: { type: "m.id.user", user: client.kairanLocalpart },
                        password: client.kairanPassword,
                        session: e.data.session,
                    });
                }
            },
        }),
    );
}

// The state of `client`'s sync loop, for a message: its last failure, if it is failing.
function syncHealth(client) {
    const state = client.getSyncState();
    return state === "SYNCING" || state === "PREPARED"
        ? `sync ${state}`
        : `sync ${state}, last failure: ${client.kairanSyncError ?? "none seen"}`;
}

function describeRoom(client, roomId) {
    const room = client.getRoom(roomId);
    if (!room) return `no room ${roomId} in ${client.kairanName}'s client; ${syncHealth(client)}`;
    const members = room.getMembers().map((m) => `${m.userId}=${m.membership}`);
    const state = [...room.currentState.events.keys()];
    return `membership ${room.getMyMembership()}, members [${members}], state types [${state}]; ${syncHealth(client)}`;
}

// Waits until `eventId` is in `client`'s timeline of `roomId`, decrypted; returns it.
async function waitDecrypted(client, roomId, eventId) {
    let seen = "not in the timeline";
    return waitFor(
        `${client.kairanName} decrypting ${eventId}`,
        () => {
            const event = client.getRoom(roomId)?.findEventById(eventId);
            if (!event) return undefined;
            if (event.isBeingDecrypted() || event.shouldAttemptDecryption()) {
                seen = "being decrypted";
                return undefined;
            }
            if (event.isDecryptionFailure()) {
                seen = `decryption failure ${event.decryptionFailureReason}: ${event.getContent().body}`;
                return undefined;
            }
            return event;
        },
        () => `${seen}; ${syncHealth(client)}`,
    );
}

function checkMessage(event, who, sender, body) {
    if (!event.isEncrypted()) fail(`${who} received ${event.getId()} unencrypted: ${JSON.stringify(event.event)}`);
    if (event.getSender() !== sender) fail(`${who} sees ${event.getId()} sent by ${event.getSender()}, not ${sender}`);
    if (event.getType() !== "m.room.message" || event.getContent().body !== body) {
        fail(
            `${who} decrypted ${event.getId()} as ${event.getType()} ${JSON.stringify(event.getContent())}, not ${JSON.stringify(body)}`,
        );
    }
}

async function send(client, roomId, body) {
    const { event_id } = await within(
        `${client.kairanName} sending ${JSON.stringify(body)}`,
        client.sendTextMessage(roomId, body),
    );
    return event_id;
}

// SAS verification in the room, alice initiating: each side's user-signing key then signs
// the other's master key, which is what makes the other user "verified by cross-signing".
async function verifyEachOther(alice, bob, roomId) {
    const bobRequest = new Promise((resolve) => bob.on(CryptoEvent.VerificationRequestReceived, resolve));
    const aliceRequest = await within(
        "alice requesting verification",
        alice.getCrypto().requestVerificationDM(bob.getUserId(), roomId),
    );
    const incoming = await within("bob receiving alice's verification request", bobRequest);
    if (incoming.otherUserId !== alice.getUserId()) fail(`bob got a verification request from ${incoming.otherUserId}`);
    await within("bob accepting the verification request", incoming.accept());
    await waitFor(
        "alice seeing bob's acceptance (m.key.verification.ready)",
        () => (aliceRequest.phase === VerificationPhase.Ready ? true : undefined),
        () => `phase ${aliceRequest.phase}`,
    );
    const aliceVerifier = await within("alice starting SAS", aliceRequest.startVerification("m.sas.v1"));
    const bobVerifier = await waitFor(
        "bob seeing alice's m.key.verification.start",
        () => incoming.verifier ?? undefined,
        () => `phase ${incoming.phase}`,
    );
    const showSas = (verifier) =>
        new Promise((resolve) => {
            const callbacks = verifier.getShowSasCallbacks();
            if (callbacks) resolve(callbacks);
            else verifier.once(VerifierEvent.ShowSas, resolve);
        });
    const aliceDone = aliceVerifier.verify();
    const bobDone = bobVerifier.verify();
    const [aliceSas, bobSas] = await within(
        "both sides showing the SAS",
        Promise.all([showSas(aliceVerifier), showSas(bobVerifier)]),
    );
    const emoji = (sas) => JSON.stringify(sas.sas.emoji?.map((e) => e[1]) ?? sas.sas.decimal);
    if (emoji(aliceSas) !== emoji(bobSas)) fail(`the SAS differ: alice ${emoji(aliceSas)}, bob ${emoji(bobSas)}`);
    await within("both sides confirming the SAS", Promise.all([aliceSas.confirm(), bobSas.confirm()]));
    await within("the verification completing on both sides", Promise.all([aliceDone, bobDone]));
    return emoji(aliceSas);
}

async function main() {
    const alice = await step("alice logs in", () => login("alice", input.alice, "js-sdk alice"));
    const bob = await step("bob logs in (first device)", () => login("bob", input.bob, "js-sdk bob 1"));
    const aliceId = alice.getUserId();
    const bobId = bob.getUserId();
    const bobDevice1 = bob.getDeviceId();

    await step("both bootstrap cross-signing", async () => {
        await bootstrapCrossSigning(alice);
        await bootstrapCrossSigning(bob);
        for (const client of [alice, bob]) {
            if (!(await client.getCrypto().isCrossSigningReady())) {
                fail(
                    `${client.kairanName}: cross-signing not ready: ${JSON.stringify(await client.getCrypto().getCrossSigningStatus())}`,
                );
            }
        }
    });

    await step("each sees the other's cross-signing keys (/keys/query across servers)", async () => {
        for (const [client, other] of [
            [alice, bobId],
            [bob, aliceId],
        ]) {
            if (
                !(await within(
                    `${client.kairanName} querying ${other}`,
                    client.getCrypto().userHasCrossSigningKeys(other, true),
                ))
            ) {
                const devices = await client.getCrypto().getUserDeviceInfo([other], true);
                fail(
                    `${client.kairanName} does not see cross-signing keys of ${other}; devices seen: ${JSON.stringify([...(devices.get(other)?.keys() ?? [])])}`,
                );
            }
        }
    });

    const backupVersion = await step("bob sets up secret storage and key backup", async () => {
        const crypto = bob.getCrypto();
        await within(
            "bootstrapSecretStorage",
            crypto.bootstrapSecretStorage({
                createSecretStorageKey: () => crypto.createRecoveryKeyFromPassphrase(),
                setupNewSecretStorage: true,
                setupNewKeyBackup: true,
            }),
        );
        if (!(await crypto.isSecretStorageReady())) {
            fail(`secret storage not ready: ${JSON.stringify(await crypto.getSecretStorageStatus())}`);
        }
        const info = await crypto.getKeyBackupInfo();
        if (!info?.version) fail(`no key backup on the server after bootstrapSecretStorage: ${JSON.stringify(info)}`);
        const trust = await crypto.isKeyBackupTrusted(info);
        if (!trust.trusted || !trust.matchesDecryptionKey)
            fail(`bob's own backup ${JSON.stringify(info)} is not trusted: ${JSON.stringify(trust)}`);
        const active = await waitFor(
            "the backup becoming active",
            async () => (await crypto.getActiveSessionBackupVersion()) ?? undefined,
        );
        if (active !== info.version) fail(`active backup ${active}, server's ${info.version}`);
        return info.version;
    });

    const roomId = await step("alice creates an encrypted room and invites bob", async () => {
        const { room_id } = await within(
            "createRoom",
            alice.createRoom({
                preset: "private_chat",
                name: "Encrypted across servers",
                invite: [bobId],
                initial_state: [
                    { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
                ],
            }),
        );
        return room_id;
    });

    await step("bob receives the invite and joins", async () => {
        await waitFor(
            "bob seeing the invite",
            () => (bob.getRoom(roomId)?.getMyMembership() === "invite" ? true : undefined),
            () => describeRoom(bob, roomId),
        );
        await within("bob joining", bob.joinRoom(roomId));
    });

    await step("both see both joined, and the room encrypted", async () => {
        for (const client of [alice, bob]) {
            await waitFor(
                `${client.kairanName} seeing alice and bob joined`,
                () => {
                    const room = client.getRoom(roomId);
                    const joined = (id) => room?.getMember(id)?.membership === "join";
                    return joined(aliceId) && joined(bobId) ? true : undefined;
                },
                () => describeRoom(client, roomId),
            );
            await waitFor(
                `${client.kairanName}'s client knowing the room is encrypted (m.room.encryption in its state)`,
                async () => ((await client.getCrypto().isEncryptionEnabledInRoom(roomId)) ? true : undefined),
                () => describeRoom(client, roomId),
            );
        }
    });

    const history = [];
    await step("five messages each way, each decrypted by the other side", async () => {
        for (let i = 1; i <= 5; i++) {
            for (const [from, to] of [
                [alice, bob],
                [bob, alice],
            ]) {
                const body = `${from.kairanName} to ${to.kairanName}, message ${i}`;
                const eventId = await send(from, roomId, body);
                checkMessage(await waitDecrypted(to, roomId, eventId), to.kairanName, from.getUserId(), body);
                history.push({ eventId, sender: from.getUserId(), body });
            }
        }
    });

    const sas = await step("alice and bob verify each other (SAS in the room)", () =>
        verifyEachOther(alice, bob, roomId),
    );

    await step("each sees the other verified by cross-signing, and the other's device too", async () => {
        for (const [client, other, device] of [
            [alice, bobId, bobDevice1],
            [bob, aliceId, alice.getDeviceId()],
        ]) {
            const crypto = client.getCrypto();
            await waitFor(
                `${client.kairanName} seeing ${other} cross-signing verified`,
                async () =>
                    (await crypto.getUserVerificationStatus(other)).isCrossSigningVerified() ? true : undefined,
                async () => JSON.stringify(await crypto.getUserVerificationStatus(other)),
            );
            await waitFor(
                `${client.kairanName} seeing ${other}'s device ${device} verified by cross-signing`,
                async () =>
                    (await crypto.getDeviceVerificationStatus(other, device))?.crossSigningVerified ? true : undefined,
                async () => JSON.stringify(await crypto.getDeviceVerificationStatus(other, device)),
            );
        }
    });

    const backedUp = await step("bob's first device backs up every room key", async () => {
        // The SDK has no public "backup finished" signal; roomKeyCounts() of its OlmMachine (a
        // private field) is what its own backup loop reads.
        const machine = bob.getCrypto().olmMachine;
        let counts;
        await waitFor(
            "all of bob's room keys in the backup",
            async () => {
                counts = await machine.roomKeyCounts();
                return counts.total > 0 && counts.backedUp === counts.total ? true : undefined;
            },
            () => JSON.stringify(counts),
        );
        return { total: counts.total, backedUp: counts.backedUp };
    });

    const bob2 = await step("bob logs in on a second device", () =>
        login("bob's second device", input.bob, "js-sdk bob 2"),
    );
    const bobDevice2 = bob2.getDeviceId();
    if (bobDevice2 === bobDevice1) fail(`the second login got the same device ${bobDevice2}`);

    await step("the second device takes the cross-signing keys from secret storage and signs itself", async () => {
        // Asks the server for bob's own keys first, as Element does: importing private keys
        // needs the public identity they belong to.
        if (
            !(await within(
                "bob's second device querying its own keys",
                bob2.getCrypto().userHasCrossSigningKeys(bobId, true),
            ))
        ) {
            fail(`bob's second device does not see bob's cross-signing keys on his server`);
        }
        await bootstrapCrossSigning(bob2);
        const status = await bob2.getCrypto().getCrossSigningStatus();
        if (!status.privateKeysCachedLocally.masterKey || !status.privateKeysCachedLocally.selfSigningKey) {
            fail(`cross-signing keys not imported from secret storage: ${JSON.stringify(status)}`);
        }
        await waitFor(
            "bob's second device seeing itself verified by cross-signing",
            async () =>
                (await bob2.getCrypto().getDeviceVerificationStatus(bobId, bobDevice2))?.crossSigningVerified
                    ? true
                    : undefined,
            async () => JSON.stringify(await bob2.getCrypto().getDeviceVerificationStatus(bobId, bobDevice2)),
        );
    });

    await step(
        "the second device sees alice verified (bob's signature of her master key, kept by bob's server)",
        async () => {
            const crypto = bob2.getCrypto();
            await waitFor(
                `bob's second device seeing ${aliceId} cross-signing verified`,
                async () =>
                    (await crypto.getUserVerificationStatus(aliceId)).isCrossSigningVerified() ? true : undefined,
                async () => `${JSON.stringify(await crypto.getUserVerificationStatus(aliceId))}; ${syncHealth(bob2)}`,
            );
        },
    );

    const restored = await step(
        "the second device restores the key backup and decrypts the earlier messages",
        async () => {
            const crypto = bob2.getCrypto();
            await within(
                "loading the backup key from secret storage",
                crypto.loadSessionBackupPrivateKeyFromSecretStorage(),
            );
            const check = await within("checkKeyBackupAndEnable", crypto.checkKeyBackupAndEnable());
            if (check?.backupInfo?.version !== backupVersion)
                fail(`the second device sees backup ${JSON.stringify(check)}, bob created ${backupVersion}`);
            const result = await within("restoreKeyBackup", crypto.restoreKeyBackup());
            if (result.imported < 1) fail(`restoreKeyBackup imported nothing: ${JSON.stringify(result)}`);
            for (const { eventId, sender, body } of history) {
                const raw = await within(`fetching ${eventId}`, bob2.fetchRoomEvent(roomId, eventId));
                const event = new sdk.MatrixEvent(raw);
                await bob2.decryptEventIfNeeded(event);
                if (event.isDecryptionFailure()) {
                    fail(
                        `the second device cannot decrypt ${eventId} (${body}) after the restore: ${event.decryptionFailureReason} (restore result ${JSON.stringify(result)})`,
                    );
                }
                checkMessage(event, "bob's second device", sender, body);
            }
            return result;
        },
    );

    await step(
        "alice learns of bob's second device, verified by cross-signing (device list update across servers)",
        async () => {
            const crypto = alice.getCrypto();
            await waitFor(
                `alice seeing ${bobId}'s device ${bobDevice2} cross-signed`,
                async () =>
                    (await crypto.getDeviceVerificationStatus(bobId, bobDevice2))?.crossSigningVerified
                        ? true
                        : undefined,
                async () => {
                    const devices = (await crypto.getUserDeviceInfo([bobId])).get(bobId);
                    return `devices [${[...(devices?.keys() ?? [])]}], status ${JSON.stringify(await crypto.getDeviceVerificationStatus(bobId, bobDevice2))}`;
                },
            );
        },
    );

    const last = await step("a new message of alice reaches both of bob's devices", async () => {
        const body = "alice to both of bob's devices";
        const eventId = await send(alice, roomId, body);
        for (const [client, who] of [
            [bob2, "bob's second device"],
            [bob, "bob"],
        ]) {
            const event = await waitDecrypted(client, roomId, eventId);
            checkMessage(event, who, aliceId, body);
            // From a device of a verified user, by a room key sent to this device: no warning.
            const info = await client.getCrypto().getEncryptionInfoForEvent(event);
            if (info?.shieldColour !== EventShieldColour.NONE) {
                fail(`${who} shows a warning on alice's message ${eventId}: ${JSON.stringify(info)}`);
            }
        }
        return eventId;
    });

    for (const client of [alice, bob, bob2]) client.stopClient();
    console.log(
        `SUMMARY ${JSON.stringify({
            roomId,
            alice: { userId: aliceId, device: alice.getDeviceId() },
            bob: { userId: bobId, devices: [bobDevice1, bobDevice2] },
            messages: history.length,
            sas,
            backupVersion,
            backedUp,
            restored,
            lastMessage: last,
            totalMs: Date.now() - started,
            steps,
        })}`,
    );
}

function clientHealth() {
    return clients.length ? ` [${clients.map((c) => `${c.kairanName}: ${syncHealth(c)}`).join("; ")}]` : "";
}

// A bug must end the run, not hang it: the Rust test kills node after its own timeout too.
process.on("unhandledRejection", (e) => {
    console.log(`FAILED at step "${currentStep}": unhandled rejection: ${describeError(e)}${clientHealth()}`);
    process.exit(1);
});

try {
    await main();
    process.exit(0);
} catch (e) {
    console.log(`FAILED at step "${currentStep}": ${describeError(e)}${clientHealth()}`);
    process.exit(1);
}
