# -*- test-case-name: tests.test_embeddings -*-
"""
Embedding vectors: unit-length, the same for the same text and model every
time, and cheap.

A vector is the signed sum of a few rows of a random table (one table per
width, built on first use from the corpus seed), chosen by a keyed hash of
the input: four of 512 rows with a sign each, some 10^12 vectors, so
distinct texts get distinct, nearly orthogonal vectors, and the same text
the same one.  Every step is one numpy call over all of a request's inputs
at once, never a loop over dimensions: 64 inputs of 1,536 dimensions cost
~0.5 ms here, and their JSON (L{floats}) ~2.5 ms where ``ujson`` of the
same floats takes ~18 ms.

A vector shortened to ``dimensions`` is the full one's first coordinates,
scaled back to unit length, as OpenAI's text-embedding-3 models shorten
theirs.  Time is not this module's: an embedding is a prefill, timed by the
model's engine or latency model (L{prefill}).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mockoai.ops.config import ModelProfile
from mockoai.sim.latency import Timing
from mockoai.sim.request import GenerationRequest
from mockoai.sim.sampling import Plan

Vectors = npt.NDArray[np.float32]

#: Rows of each width's table, and how many of them make one vector.
ROWS = 512
MIX = 4

#: Four ASCII digits for every number below 10,000, as little-endian uint32s; three and
#: a comma below 1,000; a coordinate's sign (or a space), unit digit, "." and first decimal.
_DIGITS4 = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype="<u4")
_DIGITS3_COMMA = np.frombuffer(b"".join(b"%03d," % i for i in range(1_000)), dtype="<u4")
_HEADS = np.frombuffer(
    b"".join(
        b"%s%d.%d" % (sign, unit, d) for sign in (b" ", b"-") for unit in (0, 1) for d in range(10)
    ),
    dtype="<u4",
)
#: Decimals written per coordinate: enough that every float32 reads back exactly.
_DECIMALS = 16
_SCALE = 10.0**_DECIMALS
_ONE = np.int64(10**_DECIMALS)
#: Bytes per coordinate: sign (or a space), the unit digit, ".", 16 decimals, ",".
_WIDTH = 4 + _DECIMALS
#: Vectors rendered at once (bounds the scratch memory of a large request).
_CHUNK = 128


class Embedder:
    """Deterministic unit vectors per (model, input), from tables built once per width."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._tables: dict[int, Vectors] = {}
        self._keys: dict[str, bytes] = {}

    def table(self, width: int) -> Vectors:
        """The random rows vectors of ``width`` dimensions are summed from."""
        table = self._tables.get(width)
        if table is None:
            rng = np.random.default_rng([self.seed, width])
            table = self._tables[width] = rng.standard_normal((ROWS, width), dtype=np.float32)
        return table

    def _key(self, model: str) -> bytes:
        """The model's hash key: the same text embeds differently under another model."""
        key = self._keys.get(model)
        if key is None:
            key = hashlib.blake2b(model.encode("utf-8", "surrogatepass"), digest_size=32).digest()
            if len(self._keys) < 4096:
                self._keys[model] = key
        return key

    def vectors(
        self, model: str, inputs: Sequence[bytes], width: int, dimensions: int | None = None
    ) -> Vectors:
        """
        One unit vector per input (an input is its bytes: see L{input_bytes}),
        of the model's ``width``, or its first ``dimensions`` coordinates.
        """
        key = self._key(model)
        digests = b"".join(
            hashlib.blake2b(data, digest_size=2 * MIX, key=key).digest() for data in inputs
        )
        picks = np.frombuffer(digests, dtype="<u2").reshape(len(inputs), MIX)
        rows = picks % ROWS
        signs = np.where(picks & ROWS, np.float32(-1.0), np.float32(1.0))
        table = self.table(width)
        if dimensions is not None and dimensions < width:
            table = table[:, :dimensions]
        # One gather per mixed row (MIX of them), not per dimension: the
        # temporaries stay one vector per input wide.
        summed: Vectors = table[rows[:, 0]] * signs[:, 0:1]
        for k in range(1, MIX):
            summed += table[rows[:, k]] * signs[:, k : k + 1]
        summed /= np.linalg.norm(summed, axis=1, keepdims=True)
        return summed


def input_bytes(value: str | Sequence[int]) -> bytes:
    """What an input is hashed as: its UTF-8 text, or its token ids (tagged apart)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b"\x00ids" + np.asarray(value, dtype="<i8").tobytes()


def floats(vectors: Vectors) -> list[bytes]:
    """
    Each vector as a JSON array of numbers, every float32 written with 16
    decimals, so a client reads back exactly the float32 values the base64
    form carries.  The digits come four at a time from a table, for all
    coordinates at once; a coordinate's leading space (for the minus sign
    of a negative one) is JSON whitespace.
    """
    if len(vectors) > _CHUNK:
        # 2,048 inputs of 3,072 dimensions would take ~130 MB of scratch at once.
        return [
            row
            for at in range(0, len(vectors), _CHUNK)
            for row in floats(vectors[at : at + _CHUNK])
        ]
    count, width = vectors.shape
    if not count:
        return []
    values = vectors.astype(np.float64)
    scaled = np.rint(np.abs(values) * _SCALE).astype(np.int64)
    unit = scaled >= _ONE  # 1.0 exactly (a one-dimensional vector)
    fraction = scaled - unit * _ONE
    # Five aligned 4-byte words a coordinate: [sign, unit, ".", d0], d1-d4,
    # d5-d8, d9-d12, [d13-d15, ","]: whole words from tables, no byte copies.
    out = np.empty((count, width, 5), dtype="<u4")
    top = fraction // 10**11  # d0-d4
    first = top // 10_000
    out[..., 0] = _HEADS[(values < 0) * 20 + unit * 10 + first]
    out[..., 1] = _DIGITS4[top - first * 10_000]
    rest = fraction - top * 10**11  # d5-d15
    middle = rest // 10**7
    out[..., 2] = _DIGITS4[middle]
    last = (rest - middle * 10**7).astype(np.int32)  # d9-d15
    upper = last // 1000
    out[..., 3] = _DIGITS4[upper]
    out[..., 4] = _DIGITS3_COMMA[last - upper * 1000]
    rows = out.view(np.uint8).reshape(count, width * _WIDTH)
    rows[:, -1] = ord("]")
    return [b"[" + row.tobytes() for row in rows]


def little_endian(vectors: Vectors) -> list[bytes]:
    """Each vector's float32s, little-endian: what ``encoding_format: base64`` encodes."""
    data = vectors.astype("<f4", copy=False)
    return [row.tobytes() for row in data]


def prefill(wanted: GenerationRequest, profile: ModelProfile, rng: np.random.Generator) -> Plan:
    """
    An embedding's plan: nothing to generate, its prompt to prefill.  The
    time it takes is the model's time to first token for that prompt (its
    ``response_delay`` plus ``prefill_per_token`` per token), or with an
    engine the prefill of the batch it joins.
    """
    ttft = profile.latency.first_token(rng, wanted.prompt_tokens)
    return Plan(wanted, [], Timing(ttft, 0.0))
