#!/usr/bin/env python3
"""The homeserver's module import graph, and the check that its floors hold.

    python3 scripts/import-graph.py            # print the graph: module -> modules it uses
    python3 scripts/import-graph.py --check    # exit 1 when a lower floor uses a higher one

A module is a top-level directory or file of homeserver/src (storage, rooms, api, ...);
the crates under it (kairan_core, kairan_types) are listed as what each module uses.
An edge A -> B is any `crate::B` path written in A's files (use lines and inline paths
alike, comments and strings left out), so a call through `Services` that names no module
is not an edge: that is what the floors below are for.

The floors, lowest first. A module may use its own floor and any floor below it, never
one above. `tests/import_direction.rs` runs the check in the test suite.
"""

import pathlib
import re
import sys

FLOORS = [
    # SQL only. (Below it, crates of their own whose direction the compiler keeps:
    # kairan-types, then kairan-core: configuration, errors, time, IDs, the notifier,
    # metrics, rate limits, the signing key.)
    {"storage"},
    # The domains. They may call each other (through `Services`, named at the call site).
    {"accounts", "admin", "config_check", "e2ee", "federation", "media", "push", "rooms", "server_backup", "services", "sync"},
    # HTTP: handlers and the router; the binary's entry points.
    {"api", "lib", "main"},
]

SRC = pathlib.Path(__file__).resolve().parent.parent / "homeserver" / "src"
PATH = re.compile(r"\bcrate::(?:\{\s*)?([a-z_][a-z0-9_]*)")
CRATE = re.compile(r"\b(kairan_core|kairan_types)::")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def strip(text: str) -> str:
    """Source without comments and string literals, so prose naming a module is no edge."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        module = module_of(path)
        text = strip(path.read_text())
        used = set(PATH.findall(text)) | set(CRATE.findall(text))
        for group in GROUP.findall(text):
            # `crate::{a::X, b::{Y, Z}}`: the first segment of each top-level item.
            depth, item = 0, ""
            for ch in group + ",":
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    name = item.strip().split("::")[0].strip()
                    if name:
                        used.add(name)
                    item = ""
                else:
                    item += ch
        edges.setdefault(module, set()).update(u for u in used if u != module)
    return edges


def floor_of(module: str) -> int:
    for i, floor in enumerate(FLOORS):
        if module in floor:
            return i
    raise SystemExit(f"import-graph: module `{module}` is on no floor; add it to FLOORS in {__file__}")


def main() -> int:
    edges = graph()
    if "--check" in sys.argv:
        wrong = [
            (a, b)
            for a, used in sorted(edges.items())
            for b in sorted(used)
            if not b.startswith("kairan_") and floor_of(b) > floor_of(a)
        ]
        for a, b in wrong:
            print(f"{a} (floor {floor_of(a)}) uses {b} (floor {floor_of(b)}): a lower floor may not use a higher one")
        return 1 if wrong else 0
    for a, used in sorted(edges.items()):
        print(f"{a:<14} -> {' '.join(sorted(used)) or '(nothing)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
