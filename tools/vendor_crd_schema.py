"""Vendor the PodMonitor schema that ``tests/test_k8s.py`` checks ``etc/k8s/podmonitor.yaml`` with.

prometheus-operator publishes its CRDs (``monitoring.coreos.com``, their
``openAPIV3Schema``) in its GitHub releases, which no package registry reachable
from this project's machines ships as such. ``cloudcoil-models-prometheus-operator``
(PyPI, Apache-2.0, one release per operator release) is generated from those
CRDs' schemas; this script turns its ``PodMonitor`` model back into JSON Schema
(draft 2020-12), drops what does not validate (titles, defaults), requires
``apiVersion``, ``kind``, ``metadata`` and ``spec``, and makes every object with
declared properties reject unknown ones, as ``kubectl apply`` does by default
(``--validate=strict``): a misspelt field is an error, not a silently pruned key.
The output is deterministic, so a re-run on the same release gives the same bytes.

Usage (the models need Python >= 3.10 and pydantic, so in a throwaway venv)::

    python3 -m venv /tmp/crd
    /tmp/crd/bin/pip install cloudcoil-models-prometheus-operator==0.80.1.0
    /tmp/crd/bin/python tools/vendor_crd_schema.py
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "k8s"
DISTRIBUTION = "cloudcoil.models.prometheus_operator"
KIND = "PodMonitor"
API_VERSION = "monitoring.coreos.com/v1"
#: Schema keywords that document rather than validate.
DROPPED = frozenset({"title", "default", "description"})


def strict(node: Any) -> Any:
    """``node`` without documentation keys, its declared objects closed to unknown keys."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key in ("properties", "$defs"):
            # Maps of names to schemas: the names are data, not keywords.
            out[key] = {name: strict(schema) for name, schema in value.items()}
        else:
            out[key] = strict(value)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def build() -> dict[str, Any]:
    models = importlib.import_module("cloudcoil.models.prometheus_operator.v1")
    version = metadata.version(DISTRIBUTION)
    schema: dict[str, Any] = strict(
        getattr(models, KIND).model_json_schema(by_alias=True, mode="validation")
    )
    properties = schema["properties"]
    properties["apiVersion"] = {"const": API_VERSION}
    properties["kind"] = {"const": KIND}
    properties["metadata"] = {"$ref": "#/$defs/ObjectMeta"}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            f"{API_VERSION} {KIND}: the prometheus-operator CRD's openAPIV3Schema as "
            f"cloudcoil-models-prometheus-operator {version} (Apache-2.0, see LICENSE) "
            "models it, made strict by tools/vendor_crd_schema.py."
        ),
        **schema,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    target = out / "podmonitor.schema.json"
    target.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    licence = metadata.distribution(DISTRIBUTION).read_text("licenses/LICENSE")
    if licence is None:
        print("the distribution ships no licenses/LICENSE", file=sys.stderr)
        return 1
    (out / "LICENSE").write_text(licence)
    print(f"wrote {target.relative_to(REPO_ROOT)} and its LICENSE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
