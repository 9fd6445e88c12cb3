"""Schema-driven bad input against a real kairan-homeserver: the driver of scripts/schemathesis.sh.

Starts the server from a config of its own (SQLite, closed registration, rate limits off, so
that the fuzzer measures input handling and not the limiter), creates the fuzzing account,
logs in, seeds a room with an event, a filter, a media and a key backup, so that generated
requests can name things that exist and get past "not found", then runs schemathesis over
every Client-Server operation except those that end the session or destroy the account.

Fails (exit 1) on any 5xx (`not_a_server_error`), on "panicked" in the server's log (a
panic that the extractor or the panic layer caught still is a defect), and when the token
no longer works at the end (an exclusion is missing and the rest of the run proved little).

Run through scripts/schemathesis.sh, which installs schemathesis and, where it can, runs
this inside a network namespace of its own with only loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSWORD = "schemathesis fuzzing passphrase"
USER = "fuzzer"
OTHER = "bystander"

# Operations that would log the fuzzer out or take its account away: after one of them
# every later request is a 401 and the run tests nothing. Deleting devices stays in; the
# hooks keep the current device out of those requests instead.
EXCLUDED_OPERATION_IDS = [
    "logout",
    "logout_all",
    "deactivateAccount",
    "changePassword",
]


def log(msg: str) -> None:
    print(f"schemathesis: {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_string(s: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(s)


class Http:
    def __init__(self, base: str, token: str | None = None):
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body=None, content_type="application/json", ok=True):
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        if ok and status != 200:
            raise RuntimeError(f"{method} {path}: {status} {text}")
        return status, (json.loads(text) if text else {})


def write_config(workdir: Path, port: int) -> Path:
    data = workdir / "data"
    config = workdir / "kairan.toml"
    config.write_text(
        "\n".join(
            [
                'server_name = "localhost"',
                f"data_dir = {toml_string(str(data))}",
                "[listen]",
                f"client = {toml_string(f'127.0.0.1:{port}')}",
                "[database]",
                f"url = {toml_string('sqlite://' + str(data / 'kairan.db'))}",
                "[registration]",
                'mode = "closed"',
                "[rate_limits]",
                "enabled = false",
                "",
            ]
        )
    )
    return config


def server_env() -> dict[str, str]:
    # The server reads KAIRAN_* as configuration and refuses unknown ones; its
    # configuration here comes from the file alone.
    return {k: v for k, v in os.environ.items() if not k.startswith("KAIRAN_")}


def create_user(binary: str, config: Path, workdir: Path, name: str, admin: bool) -> None:
    pw = workdir / f"password-{name}"
    pw.write_text(PASSWORD + "\n")
    args = [binary, "--config", str(config), "create-user", name, "--password-file", str(pw)]
    if admin:
        args.append("--admin")
    subprocess.run(args, check=True, env=server_env(), stdout=subprocess.DEVNULL)


def wait_ready(base: str, server: subprocess.Popen, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"kairan-homeserver exited during startup with {server.returncode}")
        try:
            with urllib.request.urlopen(base + "/_matrix/client/versions", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no 200 from {base}/_matrix/client/versions within {within} s")


def seed(api: Http, user_id: str, other_id: str) -> dict[str, list[str]]:
    """Things that exist, by kind: the hooks put them into generated requests half the time."""
    _, room = api.call("POST", "/_matrix/client/v3/createRoom", {
        "preset": "public_chat", "room_alias_name": "fuzz", "name": "Fuzzing", "invite": [other_id],
    })
    room_id = room["room_id"]
    quoted = urllib.parse.quote(room_id, safe="")
    _, sent = api.call("PUT", f"/_matrix/client/v3/rooms/{quoted}/send/m.room.message/seed-1",
                       {"msgtype": "m.text", "body": "seed"})
    _, reply = api.call("PUT", f"/_matrix/client/v3/rooms/{quoted}/send/m.room.message/seed-2", {
        "msgtype": "m.text", "body": "reply",
        "m.relates_to": {"rel_type": "m.thread", "event_id": sent["event_id"]},
    })
    _, filt = api.call("POST", f"/_matrix/client/v3/user/{urllib.parse.quote(user_id)}/filter",
                       {"room": {"timeline": {"limit": 5}}})
    _, media = api.call("POST", "/_matrix/media/v3/upload?filename=seed.txt", b"seed media",
                        content_type="text/plain")
    _, backup = api.call("POST", "/_matrix/client/v3/room_keys/version", {
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": "abcdefg", "signatures": {}},
    })
    _, sync = api.call("GET", "/_matrix/client/v3/sync?timeout=0")
    media_id = media["content_uri"].rsplit("/", 1)[-1]
    return {
        "rooms": [room_id],
        "rooms_or_aliases": [room_id, "#fuzz:localhost"],
        "aliases": ["#fuzz:localhost"],
        "events": [sent["event_id"], reply["event_id"]],
        "users": [user_id, other_id],
        "filters": [filt["filter_id"]],
        "servers": ["localhost"],
        "media": [media_id],
        "versions": [backup["version"]],
        "since": [sync["next_batch"]],
    }


def patched_spec(spec: Path, base: str, out: Path) -> Path:
    """The spec as schemathesis can use it, written beside the run (the original is not touched).

    The spec's dump gives a second operation on one path and method a path with a trailing
    space (`/rooms/{roomId}/invite ` is the invite by user ID, `/events ` the peek); such a
    path is sent as `%20` and only ever meets the 404 fallback. Each is merged into its real
    path: the bodies either-or, the parameters of both (required only where both require them).
    """
    doc = json.loads(spec.read_text())
    doc["servers"] = [{"url": base}]
    paths = doc["paths"]
    for raw in [p for p in paths if p != p.strip()]:
        real = raw.strip()
        for method, extra in paths.pop(raw).items():
            target = paths.setdefault(real, {})
            if method not in target:
                target[method] = extra
                continue
            op = target[method]
            op["operationId"] = f"{op['operationId']}_or_{extra['operationId']}"
            mine = {(p["in"], p["name"]): p for p in op.get("parameters", [])}
            theirs = {(p["in"], p["name"]): p for p in extra.get("parameters", [])}
            merged = []
            for key in list(mine) + [k for k in theirs if k not in mine]:
                param = dict(mine.get(key) or theirs[key])
                if key not in mine or key not in theirs:
                    param["required"] = param.get("in") == "path"
                merged.append(param)
            op["parameters"] = merged
            a = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            b = extra.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if a and b:
                op["requestBody"]["content"]["application/json"]["schema"] = {"anyOf": [a, b]}
    out.write_text(json.dumps(doc))
    return out


def write_st_config(workdir: Path, base: str, token: str, examples: int, workers: int, seed_value: int) -> Path:
    lines = [
        f"base-url = {toml_string(base)}",
        f"workers = {workers}",
        f"seed = {seed_value}",
        'hooks = "kairan_hooks"',
        "continue-on-failure = true",
        "request-timeout = 30",
        "",
        "[headers]",
        f"Authorization = {toml_string('Bearer ' + token)}",
        "",
        "[generation]",
        f"max-examples = {examples}",
        # The token above authenticates every request; generated access tokens would only
        # test the 401 path, and the extractor's header wins anyway.
        "with-security-parameters = false",
        'database = "none"',
        "",
        # Crashes remembered across runs would be replayed first and change what a run
        # tests; each run is its own (and nothing lands in the work tree).
        "[cache]",
        "enabled = false",
        "",
    ]
    path = workdir / "schemathesis.toml"
    path.write_text("\n".join(lines))
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--st", required=True, help="the schemathesis CLI")
    ap.add_argument("--examples", type=int, default=10, help="most test cases per operation and phase")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--time-limit", type=int, default=900, help="seconds before the run counts as stuck")
    ap.add_argument("st_args", nargs="*", help="more arguments for `st run` (e.g. --include-operation-id login)")
    args = ap.parse_args()

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(workdir, port)
    create_user(args.binary, config, workdir, USER, admin=True)
    create_user(args.binary, config, workdir, OTHER, admin=False)

    stdout_log, stderr_log = workdir / "server.stdout.log", workdir / "server.stderr.log"
    with open(stdout_log, "wb") as out, open(stderr_log, "wb") as err:
        server = subprocess.Popen([args.binary, "--config", str(config)], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=err, env=server_env())
    failures: list[str] = []
    try:
        wait_ready(base, server)
        _, login = Http(base).call("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": USER},
            "password": PASSWORD,
        })
        token, device, user_id = login["access_token"], login["device_id"], login["user_id"]
        api = Http(base, token)
        existing = seed(api, user_id, f"@{OTHER}:localhost")
        spec = patched_spec(Path(args.spec), base, workdir / "client-server.json")
        st_config = write_st_config(workdir, base, token, args.examples, args.workers, args.seed)
        seeds = workdir / "seeds.json"
        seeds.write_text(json.dumps(existing))

        cmd = [str(Path(args.st).resolve()), "--config-file", str(st_config), "run", str(spec), "--url", base, "--no-color",
               # 5xx is the defect sought; the stateful phase is left out, as it follows
               # links from responses and its length is not bounded by the examples.
               "--checks", "not_a_server_error", "--phases", "examples,coverage,fuzzing",
               "--report", "junit,har", "--report-dir", str(workdir / "report")]
        for op in EXCLUDED_OPERATION_IDS:
            cmd += ["--exclude-operation-id", op]
        cmd += args.st_args
        env = dict(os.environ)
        env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
        # The hooks are imported from the work tree: no __pycache__ left in it.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # What the hooks must keep away from: the device whose token the run uses.
        env["KAIRAN_FUZZ_DEVICE"] = device
        # What exists, for the hooks to put into path and query parameters.
        env["KAIRAN_FUZZ_SEEDS"] = str(seeds)
        env["KAIRAN_FUZZ_SEED"] = str(args.seed)
        log(f"{' '.join(cmd[:6])} ... ({args.examples} examples per operation, device {device})")
        started = time.monotonic()
        try:
            st = subprocess.run(cmd, env=env, cwd=workdir, timeout=args.time_limit)
            if st.returncode != 0:
                failures.append(f"schemathesis exited {st.returncode} (its report is above)")
        except subprocess.TimeoutExpired:
            failures.append(f"schemathesis did not finish within {args.time_limit} s")
        log(f"schemathesis ran {time.monotonic() - started:.0f} s")

        status, body = api.call("GET", "/_matrix/client/v3/account/whoami", ok=False)
        if status != 200 or body.get("device_id") != device:
            failures.append(f"the fuzzing token stopped working ({status} {body}): an operation that ends "
                            "the session was not excluded")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        elif server.returncode != 0:
            failures.append(f"the server died during the run (exit {server.returncode})")

    panics = []
    for path in (stdout_log, stderr_log):
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "panicked" in line:
                panics.append(f"{path.name}:{i + 1}: " + " | ".join(lines[i:i + 3]))
    if panics:
        failures.append(f"{len(panics)} panic(s) in the server log:\n  " + "\n  ".join(panics[:20]))
    server_errors = [line for line in stderr_log.read_text(errors="replace").splitlines()
                     + stdout_log.read_text(errors="replace").splitlines() if re.search(r"\bERROR\b", line)]
    if server_errors:
        log(f"{len(server_errors)} ERROR line(s) in the server log (first ones below; 5xx fail the run above):")
        for line in server_errors[:10]:
            print("  " + line)

    if failures:
        for f in failures:
            log("FAILED: " + f)
        log(f"server logs and reports: {workdir}")
        return 1
    log("passed: no 5xx, no panic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
