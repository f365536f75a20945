"""Vendor the part of OpenAI's OpenAPI spec that mockoai's tests validate against.

The test suite checks server responses against OpenAI's official schemas, but the full
spec (``openai-openapi.yaml``, ~3 MB) is not part of this repository. This script extracts
the few response schemas the tests use, plus everything they ``$ref`` transitively, strips
documentation-only keys, and writes ``tests/openapi/openai-subset.json`` together with the
spec's MIT licence. The output is deterministic: re-running it on the same spec gives
identical bytes, so ``tests/test_spec.py`` can check that the vendored copy is current.

It also writes ``tests/openapi/openai-operations.json``: an OpenAPI document holding only the
operations mockoai implements (``OPERATIONS``), with their request and response schemas, for
the schemathesis run in ``tests/test_hostile.py``.

Usage: python tools/vendor_openapi.py [--spec PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = Path("..") / "shared" / "api" / "openai-openapi.yaml"
DEFAULT_OUT = Path("tests") / "openapi"
SUBSET_NAME = "openai-subset.json"
OPERATIONS_NAME = "openai-operations.json"

#: The operations mockoai implements, as (path, method) in the spec (paths under /v1).
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "post"),
    ("/completions", "post"),
    ("/models", "get"),
    ("/models/{model}", "get"),
)
RESPONSES_PREFIX = "#/components/responses/"
LICENSE_NAME = "LICENSE"

ROOT_SCHEMAS: tuple[str, ...] = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "CreateEmbeddingResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
)

REF_PREFIX = "#/components/schemas/"

# Documentation-only keywords; none of them affects validation.
STRIPPED_KEYS = frozenset(
    {"description", "example", "examples", "x-oaiMeta", "deprecated", "title"}
)
STRIPPED_PREFIXES = ("x-stainless-",)

# Keywords whose value is a map of *names* to subschemas: the names are data (a property may
# well be called "title" or "description") and must never be stripped.
NAME_MAP_KEYS = frozenset({"properties", "patternProperties", "$defs", "definitions"})

# Keywords whose value is literal data, not a schema: copied verbatim.
LITERAL_KEYS = frozenset({"enum", "const", "default", "required", "discriminator"})

LICENSE_HEADER = (
    "The JSON Schema subset in this folder (openai-subset.json) is derived from OpenAI's "
    "openai-openapi repository (https://github.com/openai/openai-openapi) under this licence:"
)

Json = Any


def _load_yaml(path: Path) -> Json:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as f:
        return yaml.load(f, Loader=loader)


def _is_stripped(key: str) -> bool:
    return key in STRIPPED_KEYS or key.startswith(STRIPPED_PREFIXES)


def strip_schema(schema: Json) -> Json:
    """Return a copy of ``schema`` without documentation-only keys."""
    if isinstance(schema, list):
        return [strip_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Json] = {}
    for key, value in schema.items():
        if not isinstance(key, str):
            raise TypeError(f"non-string key {key!r} in schema")
        if _is_stripped(key):
            continue
        if key in LITERAL_KEYS:
            out[key] = value
        elif key in NAME_MAP_KEYS and isinstance(value, dict):
            out[key] = {name: strip_schema(sub) for name, sub in value.items()}
        else:
            out[key] = strip_schema(value)
    return out


def _refs(schema: Json) -> Iterator[str]:
    if isinstance(schema, list):
        for item in schema:
            yield from _refs(item)
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            elif key == "discriminator" and isinstance(value, dict):
                yield from (v for v in value.get("mapping", {}).values() if isinstance(v, str))
            else:
                yield from _refs(value)


def collect_schemas(all_schemas: dict[str, Json], roots: Sequence[str]) -> dict[str, Json]:
    """Strip the ``roots`` and every schema they reference, transitively."""
    out: dict[str, Json] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        if name not in all_schemas:
            raise KeyError(f"schema {name!r} not found in components.schemas")
        stripped = strip_schema(all_schemas[name])
        out[name] = stripped
        for ref in _refs(stripped):
            if not ref.startswith(REF_PREFIX):
                raise ValueError(f"{name}: unsupported $ref {ref!r} (only {REF_PREFIX}X)")
            todo.append(ref[len(REF_PREFIX) :])
    return dict(sorted(out.items()))


def build_subset(spec_bytes: bytes, spec: Json) -> bytes:
    schemas = collect_schemas(spec["components"]["schemas"], ROOT_SCHEMAS)
    document = {
        "source": {
            "file": "openai-openapi.yaml",
            "sha256": hashlib.sha256(spec_bytes).hexdigest(),
            "note": "generated by tools/vendor_openapi.py; do not edit",
        },
        "components": {"schemas": schemas},
    }
    # allow_nan=False and the default ensure_ascii keep the output plain, portable JSON.
    text = json.dumps(document, sort_keys=True, indent=1, allow_nan=False)
    return (text + "\n").encode("ascii")


def build_operations(spec_bytes: bytes, spec: Json) -> bytes:
    """An OpenAPI document of just ``OPERATIONS``, with every schema they reference."""
    paths: dict[str, Json] = {}
    for path, method in OPERATIONS:
        operation = strip_schema(spec["paths"][path][method])
        for response in operation["responses"].values():
            # Test tools read a text/event-stream schema as describing each event's
            # envelope (data, event, id), where OpenAI's describes its data payload:
            # stream events are validated by the suite's own SSE tests instead.
            response.get("content", {}).pop("text/event-stream", None)
        paths.setdefault(path, {})[method] = operation
    responses: dict[str, Json] = {}
    for ref in list(_refs(paths)):
        if ref.startswith(RESPONSES_PREFIX):
            name = ref[len(RESPONSES_PREFIX) :]
            responses[name] = strip_schema(spec["components"]["responses"][name])
    roots = [
        ref[len(REF_PREFIX) :] for ref in _refs([paths, responses]) if ref.startswith(REF_PREFIX)
    ]
    document = {
        "openapi": spec["openapi"],
        "info": {
            "title": "OpenAI API: the operations mockoai implements",
            "version": spec["info"]["version"],
            "x-source": {
                "file": "openai-openapi.yaml",
                "sha256": hashlib.sha256(spec_bytes).hexdigest(),
                "note": "generated by tools/vendor_openapi.py; do not edit",
            },
        },
        "servers": [{"url": "/v1"}],
        "paths": paths,
        "components": {
            "schemas": collect_schemas(spec["components"]["schemas"], sorted(set(roots))),
            "responses": dict(sorted(responses.items())),
        },
    }
    text = json.dumps(document, sort_keys=True, indent=1, allow_nan=False)
    return (text + "\n").encode("ascii")


def build_license(license_text: str) -> bytes:
    return (LICENSE_HEADER + "\n\n" + license_text.strip("\n") + "\n").encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.write_bytes(data)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--spec",
        type=Path,
        help=f"OpenAPI YAML file (default: {DEFAULT_SPEC} from the repo root)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: {DEFAULT_OUT} in the repo root)",
    )
    args = parser.parse_args(argv)
    spec_path: Path = args.spec if args.spec is not None else REPO_ROOT / DEFAULT_SPEC
    out_dir: Path = args.out if args.out is not None else REPO_ROOT / DEFAULT_OUT
    license_path = spec_path.with_name(spec_path.stem + ".LICENSE")

    if not spec_path.is_file():
        parser.error(f"spec not found: {spec_path}")
    if not license_path.is_file():
        parser.error(f"licence not found next to the spec: {license_path}")

    spec_bytes = spec_path.read_bytes()
    spec = _load_yaml(spec_path)
    subset = build_subset(spec_bytes, spec)
    operations = build_operations(spec_bytes, spec)
    licence = build_license(license_path.read_text(encoding="utf-8"))

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (
        (SUBSET_NAME, subset),
        (OPERATIONS_NAME, operations),
        (LICENSE_NAME, licence),
    ):
        changed = _write_if_changed(out_dir / name, data)
        print(f"{out_dir / name}: {len(data)} bytes{'' if changed else ' (unchanged)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
