"""Export the JSON Schema of every event to ``schemas/json/<name>.schema.json``.

Producers validate against these files, so they are generated from the very ``msgspec`` classes
the service decodes with, and checked in. ``python -m schemas.export`` regenerates them;
``python -m schemas.export --check`` exits 1 naming each file that drifted from the code (the
unit tests run the same comparison).

The output is deterministic (sorted keys, 2-space indent, trailing newline), so a diff of the
files is a diff of the contract.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from schemas.events import EVENT_TYPES, SCHEMA_VERSION, SUPPORTED_VERSIONS, Record

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# `$id` must be an absolute URI; it names the schema and need not resolve. The version is part
# of it so that a v2 schema is a different document, not an edit of this one.
ID_BASE = f"https://tipstream.invalid/schemas/v{SCHEMA_VERSION}/"
SCHEMA_DIR = Path(__file__).resolve().parent / "json"
SUFFIX = ".schema.json"


def schema_of(name: str, record_type: type[Record]) -> dict[str, Any]:
    """The JSON Schema document of one event type, with its root object inlined."""
    generated = msgspec.json.schema(record_type)
    definitions: dict[str, Any] = dict(generated.get("$defs", {}))
    root_ref = generated["$ref"]
    root = dict(definitions.pop(root_ref.rsplit("/", 1)[-1]))
    # The root object sits at the top of the document, so a (recursive) reference to it is "#".
    definitions = _replace_refs(definitions, root_ref, "#")
    root = _replace_refs(root, root_ref, "#")
    docstring = inspect.cleandoc(record_type.__doc__ or "")
    versions = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
    document: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": f"{ID_BASE}{name}{SUFFIX}",
        **root,
        "title": record_type.__name__,
        "description": (
            f"{docstring}\n\nschema_version {SCHEMA_VERSION}: events carry "
            f'"schema_version": {SCHEMA_VERSION} (the default when absent); '
            f"the service accepts versions {versions}."
        ),
    }
    if definitions:
        document["$defs"] = definitions
    return document


def render(name: str, record_type: type[Record]) -> str:
    """The exact text of one schema file."""
    return json.dumps(schema_of(name, record_type), indent=2, sort_keys=True) + "\n"


def render_all(event_types: Mapping[str, type[Record]] = EVENT_TYPES) -> dict[str, str]:
    """File name -> file text, for every event type."""
    return {f"{name}{SUFFIX}": render(name, cls) for name, cls in event_types.items()}


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Schema files in ``directory`` that differ from the code: changed, missing or stale."""
    expected = render_all()
    problems = []
    for file_name, text in sorted(expected.items()):
        path = directory / file_name
        if not path.exists():
            problems.append(f"{file_name} (missing)")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{file_name} (differs)")
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name not in expected:
            problems.append(f"{path.name} (no such event type)")
    return problems


def write_all(directory: Path = SCHEMA_DIR) -> list[str]:
    """(Re)write every schema file and delete stale ones; return the names of files changed."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_all()
    changed = []
    for file_name, text in sorted(expected.items()):
        path = directory / file_name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            # newline="\n": the same bytes on every platform, or --check would flag Windows.
            path.write_text(text, encoding="utf-8", newline="\n")
            changed.append(file_name)
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name not in expected:
            path.unlink()
            changed.append(path.name)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m schemas.export``."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export", description="Export the JSON Schema of every event."
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file drifted"
    )
    parser.add_argument(
        "--dir", type=Path, default=SCHEMA_DIR, help=f"output directory (default: {SCHEMA_DIR})"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = drifted(args.dir)
        if problems:
            print("JSON Schema files out of date with schemas/events.py:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            print("run `python -m schemas.export` to regenerate them", file=sys.stderr)
            return 1
        print(f"{len(EVENT_TYPES)} JSON Schema files up to date in {args.dir}")
        return 0
    changed = write_all(args.dir)
    print(f"{len(changed)} of {len(EVENT_TYPES)} JSON Schema files updated in {args.dir}")
    return 0


def _replace_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {
            key: (new if key == "$ref" and value == old else _replace_refs(value, old, new))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_replace_refs(item, old, new) for item in node]
    return node


if __name__ == "__main__":
    sys.exit(main())
