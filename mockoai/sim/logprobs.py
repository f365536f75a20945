# -*- test-case-name: tests.test_logprobs -*-
"""
Log probabilities of the tokens a choice sends, and of the alternatives a
sampler would have weighed at each position.

Values are drawn, a row of uniforms per token position, from a generator
seeded with the request's ``seed`` and the choice's index (or from one
process-wide generator when the request has no seed), so the same seeded
request gets the same values, and position ``t`` gets the same values however
many tokens follow it or however a stream splits them.  A row becomes the
sampled token's logprob (log-logistic, median ``-0.05``: most tokens are
near-certain, a few are guesses) and alternatives: the first gets at most half
of what the sampled token left over (or of the sampled token's own
probability, whichever is less), each next one at most half of the one
before.  So the sampled token is the likeliest, alternatives come in
decreasing order, and the probabilities never add up past 1.  Values are
snapped to a fine grid of L{LEVELS} with 8 significant digits (float32's
precision, which is what real servers send).

Alternatives are words of the corpus vocabulary, never the sampled token.
The work is a dozen numpy calls per choice, whatever its length: ~0.1 ms
for 256 tokens with 4 alternatives each, seeding the generator included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mockoai.sim.corpus import VOCABULARY

#: What an alternative may be: every vocabulary word as the corpus writes it
#: after a space, lower-case or capitalised, and the two marks (escaped bytes,
#: which for these are the text itself).
ALTERNATIVES: tuple[bytes, ...] = tuple(
    [b" " + w.encode() for w in VOCABULARY]
    + [b" " + w.capitalize().encode() for w in VOCABULARY]
    + [b",", b"."]
)
_ALTERNATIVE_ID = {token: i for i, token in enumerate(ALTERNATIVES)}
#: The most alternatives any API asks for (OpenAI's chat ``top_logprobs`` of 20
#: is the sampled token and 19 others).
MAX_ALTERNATIVES = 19

#: The sampled token's logprob: ``-exp(_CENTER + _SPREAD * logit(u))``, within [_FLOOR, _CEILING].
_CENTER = -3.0
_SPREAD = 1.4
_FLOOR = -15.0
#: The likeliest a sampled token gets (float32 cannot tell 1 - 1e-8 from 1).
_CEILING = -1e-8
_TINY = 1e-12
#: Each alternative gets a share of the one before it, log-uniform in [0.05, 0.5).
_LOG_SHARE = float(np.log(0.05))
_LOG_SHARE_SPAN = float(np.log(0.5)) - _LOG_SHARE

#: Every logprob is one of ``LEVELS``, spaced evenly in ``log(-logprob)``
#: from ``-1e-8`` to ``-100`` (0.14 % apart), each rounded to 8 significant
#: digits: a renderer formats the levels once, not each value (Python's
#: float ``repr`` costs ~300 ns, a whole 256-token answer's budget for five
#: alternatives).  Consecutive alternatives differ by at least ``log 2``,
#: far more than a level, so their order survives the rounding.
LEVEL_COUNT = 1 << 14
_LOG_LOW = float(np.log(-_CEILING))
_LOG_HIGH = float(np.log(100.0))
_STEP = (_LOG_HIGH - _LOG_LOW) / (LEVEL_COUNT - 1)
_LOG_FLOOR = float(np.log(-_FLOOR))


def _levels() -> npt.NDArray[np.float64]:
    raw = -np.exp(_LOG_LOW + _STEP * np.arange(LEVEL_COUNT))
    # 8 significant digits, as the nearest doubles to those decimals (so
    # ``repr`` writes them short, as float32 values are written).
    scale = 7.0 - np.floor(np.log10(-raw))
    power = 10.0**scale
    levels: npt.NDArray[np.float64] = np.rint(raw * power) / power
    return levels


#: The value of each level (level 0 is the likeliest, ``-1e-8``).
LEVELS = _levels()

_shared = np.random.default_rng()


class Logprobs:
    """
    Token ``t``'s logprob is ``LEVELS[logprob[t]]``; its ``m`` alternatives
    are ``ALTERNATIVES[alternative[t, j]]`` with ``LEVELS[other[t, j]]``,
    most likely first (numpy arrays of indices, for renderers to gather with).
    """

    __slots__ = ("alternative", "logprob", "m", "other")

    def __init__(
        self,
        logprob: npt.NDArray[np.int64],
        alternative: npt.NDArray[np.int64],
        other: npt.NDArray[np.int64],
    ) -> None:
        self.logprob = logprob
        self.alternative = alternative
        self.other = other
        self.m = alternative.shape[1]

    def __len__(self) -> int:
        return len(self.logprob)


def generator(seed: int | None, *key: int) -> np.random.Generator:
    """The generator of one run of tokens: seeded from the request's seed and ``key``, or shared."""
    if seed is None:
        return _shared
    # numpy takes non-negative seeds only; OpenAI's seed is any int64.
    return np.random.default_rng([seed % 2**64, *key])


def alternative_id(token: bytes) -> int:
    """Where the escaped ``token`` is among L{ALTERNATIVES}, or -1."""
    return _ALTERNATIVE_ID.get(token, -1)


def draw(sampled: Sequence[int], m: int, rng: np.random.Generator) -> Logprobs:
    """
    The logprobs of a run of tokens and ``m`` alternatives for each (``m`` at
    most L{MAX_ALTERNATIVES}); ``sampled[t]`` is token ``t``'s
    L{alternative_id}, so that no alternative repeats it.
    """
    n = len(sampled)
    rows = rng.random((n, 2 + m))
    u = np.minimum(np.maximum(rows[:, 0], _TINY), 1.0 - _TINY)
    # Worked in log(-logprob), the levels' own scale.
    magnitude = _CENTER + _SPREAD * np.log(u / (1.0 - u))
    magnitude = np.minimum(np.maximum(magnitude, _LOG_LOW), _LOG_FLOOR)
    logprob = _index(magnitude)
    if not m or not n:
        nothing = np.zeros((n, m), dtype=np.int64)
        return Logprobs(logprob, nothing, nothing)
    count = len(ALTERNATIVES)
    # m + 1 consecutive candidates: if the sampled token is among the first
    # m, the last one takes its place (consecutive ids are distinct).
    candidates = (
        (rows[:, 1] * count).astype(np.int64)[:, None] + np.arange(m + 1, dtype=np.int64)
    ) % count
    same = candidates[:, :m] == np.array(sampled, dtype=np.int64)[:, None]
    alternative = np.where(same, candidates[:, m : m + 1], candidates[:, :m])
    p = np.exp(-np.exp(magnitude))
    rest = np.log(np.maximum(np.minimum(p, 1.0 - p), _TINY))
    other = rest[:, None] + np.cumsum(_LOG_SHARE + _LOG_SHARE_SPAN * rows[:, 2:], axis=1)
    return Logprobs(logprob, alternative, _index(np.log(-other)))


def _index(magnitudes: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The nearest level of each logprob given as ``log(-logprob)``."""
    index = np.rint((magnitudes - _LOG_LOW) * (1.0 / _STEP)).astype(np.int64)
    return np.minimum(np.maximum(index, 0), LEVEL_COUNT - 1)


def tokens(view: memoryview, bounds: Sequence[int]) -> list[bytes]:
    """The escaped bytes of each token: token ``t`` is ``view[bounds[t]:bounds[t + 1]]``."""
    first = bounds[0]
    data = bytes(view[first : bounds[-1]])
    cuts = [b - first for b in bounds]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


def decoded(token: bytes) -> str:
    """The text of one JSON-string-escaped token."""
    if b"\\" not in token:
        return token.decode("utf-8")
    return str(json.loads(b'"' + token + b'"'))
