"""Schemathesis hooks for scripts/schemathesis.sh: keep the run's own session alive and bounded.

Applied to every request just before it is sent, whatever phase generated it, so that no
example, boundary value or dictionary draw gets through.
"""

from __future__ import annotations

import json
import os
import random
import threading

import schemathesis

# The device whose access token the whole run uses (set by run.py).
DEVICE = os.environ.get("KAIRAN_FUZZ_DEVICE", "")
# Long polls answer at their timeout when nothing happens (up to the server's cap of two
# minutes): a few of those would take the whole time budget. The fuzzer still sends
# strings, negatives and zero; only large waits are cut.
MAX_WAIT_MS = 200
WAIT_PARAMETERS = ("timeout", "timeout_ms")

# Things that exist on the server (run.py seeds them), by kind. Generated identifiers almost
# never name a real room or event, so requests would stop at "not found" or "not joined";
# half the time one that exists is put in, and the handler's deeper checks meet the input.
SEEDS = json.loads(open(os.environ["KAIRAN_FUZZ_SEEDS"]).read()) if os.environ.get("KAIRAN_FUZZ_SEEDS") else {}
SUBSTITUTION_PROBABILITY = 0.5
PATH_SEEDS = {
    "roomId": "rooms",
    "roomIdOrAlias": "rooms_or_aliases",
    "roomAlias": "aliases",
    "eventId": "events",
    "userId": "users",
    "filterId": "filters",
    "serverName": "servers",
    "mediaId": "media",
    "version": "versions",
}
QUERY_SEEDS = {"since": "since", "from": "since", "room_id": "rooms", "user_id": "users"}
# Leaving, forgetting or upgrading the seeded room would end every later test's access to
# it; those keep the generated room IDs.
KEEP_GENERATED_ROOM = ("/leave", "/forget", "/upgrade")
_random = random.Random(int(os.environ.get("KAIRAN_FUZZ_SEED", "0")))
_lock = threading.Lock()


def _substitute(params, seeds_by_name):
    for name, kind in seeds_by_name.items():
        values = SEEDS.get(kind)
        if name in params and values:
            with _lock:
                if _random.random() < SUBSTITUTION_PROBABILITY:
                    params[name] = _random.choice(values)


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.path_parameters and not case.path.endswith(KEEP_GENERATED_ROOM):
        _substitute(case.path_parameters, PATH_SEEDS)
    if case.query:
        _substitute(case.query, QUERY_SEEDS)
    # Deleting the current device would end the session (the device's token goes with
    # it); other device IDs stay, so the handlers still meet made-up and missing ones.
    if DEVICE:
        if case.path_parameters and case.path_parameters.get("deviceId") == DEVICE:
            case.path_parameters["deviceId"] = "NOTTHEFUZZINGDEVICE"
        if case.path.endswith("/delete_devices") and isinstance(case.body, dict):
            devices = case.body.get("devices")
            if isinstance(devices, list):
                case.body["devices"] = [d for d in devices if d != DEVICE]
    if case.query:
        for name in WAIT_PARAMETERS:
            value = case.query.get(name)
            if _number(value) is not None and _number(value) > MAX_WAIT_MS:
                case.query[name] = MAX_WAIT_MS


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
