# -*- test-case-name: tests.test_corpus -*-
"""
The pre-tokenized answer text: every response body is a slice of one buffer.

At startup we generate lorem-ipsum articles with python-lorem's vocabulary
and its sentence rules (4-8 words per clause, up to two comma clauses, 5-10
sentences per paragraph, 5 paragraphs per article), vectorised with numpy so
4096 articles take a fraction of a second instead of python-lorem's ~12 s.

The articles are stored once, already JSON-string-escaped, back to back in
L{Corpus.data}, with the byte offset where every token starts in
L{Corpus.offsets} (tokens as defined in L{mockoai.sim.tokens}).  Every article
begins with a paragraph break token (``"\\n\\nWord"``), so an answer that
runs past the end of one article flows into the next as a new paragraph; an
answer starting at an article skips that break.
"""

from __future__ import annotations

import time

import lorem
import numpy as np
import numpy.typing as npt

#: python-lorem's word pool (the classic lorem ipsum vocabulary).
VOCABULARY: tuple[str, ...] = tuple(lorem._TEXT)
PARAGRAPHS_PER_ARTICLE = 5
SENTENCES_PER_PARAGRAPH = (5, 10)
WORDS_PER_CLAUSE = (4, 8)
MAX_COMMAS = 2
#: Escaped bytes of the paragraph break that starts every article.
ARTICLE_LEAD = b"\\n\\n"


class Corpus:
    """
    ``data`` holds the escaped text; token ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``; ``article_tokens[a]`` is the index
    of article ``a``'s first token.
    """

    __slots__ = ("article_tokens", "build_seconds", "data", "offsets", "tokens", "view")

    def __init__(
        self,
        data: bytes,
        offsets: npt.NDArray[np.int32],
        article_tokens: npt.NDArray[np.int64],
        build_seconds: float = 0.0,
    ) -> None:
        self.data = data
        self.view = memoryview(data)
        self.offsets = offsets
        self.article_tokens = article_tokens
        self.tokens = len(offsets) - 1
        self.build_seconds = build_seconds

    @property
    def articles(self) -> int:
        return len(self.article_tokens)

    def text(self, first_token: int, count: int) -> str:
        """Decoded text of ``count`` tokens from an article start (for tests and logs)."""
        start = int(self.offsets[first_token]) + len(ARTICLE_LEAD)
        end = int(self.offsets[first_token + count])
        return unescape(self.data[start:end])


def _gather(
    table: list[bytes], ids: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> bytes:
    """
    Concatenate ``table[ids]`` in numpy, a block at a time: a Python list of
    1.5 million pieces would leave ~40 MB of heap behind after startup.
    """
    width = max(len(t) for t in table)
    padded = np.zeros((len(table), width), dtype=np.uint8)
    for row, piece in enumerate(table):
        padded[row, : len(piece)] = np.frombuffer(piece, dtype=np.uint8)
    columns = np.arange(width)
    blocks = []
    step = 65536
    for begin in range(0, len(ids), step):
        rows = padded[ids[begin : begin + step]]
        keep = columns < lengths[begin : begin + step, None]
        blocks.append(rows[keep].tobytes())
    return b"".join(blocks)


def unescape(escaped: bytes) -> str:
    import json

    return str(json.loads(b'"' + escaped + b'"'))


def build(articles: int = 4096, seed: int = 0) -> Corpus:
    """Generate ``articles`` articles deterministically from ``seed``."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    vocab = len(VOCABULARY)

    # Token table: lower-case word, capitalised word, paragraph-start word,
    # comma, full stop -- each with its leading whitespace, JSON-escaped.
    words = [w.encode() for w in VOCABULARY]
    table = (
        [b" " + w for w in words]
        + [b" " + w.capitalize() for w in words]
        + [ARTICLE_LEAD + w.capitalize() for w in words]
        + [b",", b"."]
    )
    capital, paragraph, comma, stop = vocab, 2 * vocab, 3 * vocab, 3 * vocab + 1
    lengths = np.array([len(t) for t in table], dtype=np.int64)

    low, high = SENTENCES_PER_PARAGRAPH
    per_paragraph = rng.integers(low, high + 1, size=articles * PARAGRAPHS_PER_ARTICLE)
    sentences = int(per_paragraph.sum())

    wlow, whigh = WORDS_PER_CLAUSE
    main_words = rng.integers(wlow, whigh + 1, size=sentences)
    clause_words = rng.integers(wlow, whigh + 1, size=(sentences, MAX_COMMAS))
    # python-lorem: pick 0..2 comma attempts; each goes ahead on a coin flip
    # and the first failed flip ends the sentence.
    attempts = rng.integers(0, MAX_COMMAS + 1, size=sentences)
    flips = rng.random(size=(sentences, MAX_COMMAS)) < 0.5
    first = (attempts >= 1) & flips[:, 0]
    second = first & (attempts >= 2) & flips[:, 1]
    clause1 = np.where(first, 1 + clause_words[:, 0], 0)
    clause2 = np.where(second, 1 + clause_words[:, 1], 0)
    sentence_len = main_words + clause1 + clause2 + 1

    sentence_start = np.zeros(sentences, dtype=np.int64)
    np.cumsum(sentence_len[:-1], out=sentence_start[1:])
    total = int(sentence_len.sum())

    ids = rng.integers(0, vocab, size=total)
    ids[sentence_start] += capital
    paragraph_first_sentence = np.zeros(len(per_paragraph), dtype=np.int64)
    np.cumsum(per_paragraph[:-1], out=paragraph_first_sentence[1:])
    paragraph_start = sentence_start[paragraph_first_sentence]
    ids[paragraph_start] += paragraph - capital
    ids[(sentence_start + main_words)[first]] = comma
    ids[(sentence_start + main_words + clause1)[second]] = comma
    ids[sentence_start + sentence_len - 1] = stop

    offsets = np.zeros(total + 1, dtype=np.int32)
    token_lengths = lengths[ids]
    np.cumsum(token_lengths, out=offsets[1:])
    data = _gather(table, ids, token_lengths)
    article_tokens = paragraph_start[::PARAGRAPHS_PER_ARTICLE].copy()
    return Corpus(data, offsets, article_tokens, time.perf_counter() - started)
