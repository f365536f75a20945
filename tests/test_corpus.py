"""The generated corpus: determinism, layout, escaping, vocabulary and shape."""

from __future__ import annotations

import functools
import json
import re
import time

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from mockoai.sim import corpus
from mockoai.sim.corpus import ARTICLE_LEAD, PARAGRAPHS_PER_ARTICLE, VOCABULARY

ARTICLES = 64


@functools.cache
def small(seed: int = 0) -> corpus.Corpus:
    return corpus.build(articles=ARTICLES, seed=seed)


@functools.cache
def small_text() -> str:
    return corpus.unescape(small().data)


class DeterminismTests(SynchronousTestCase):
    def test_same_seed_same_bytes(self) -> None:
        again = corpus.build(articles=ARTICLES, seed=0)
        self.assertEqual(again.data, small().data)
        self.assertTrue(np.array_equal(again.offsets, small().offsets))
        self.assertTrue(np.array_equal(again.article_tokens, small().article_tokens))

    def test_different_seed_different_bytes(self) -> None:
        self.assertNotEqual(small(1).data, small(0).data)
        self.assertNotEqual(small(1).data, small(2).data)

    def test_default_seed_is_zero(self) -> None:
        self.assertEqual(corpus.build(articles=ARTICLES).data, small(0).data)


class LayoutTests(SynchronousTestCase):
    def test_article_count(self) -> None:
        self.assertEqual(small().articles, ARTICLES)
        self.assertEqual(corpus.build(articles=17).articles, 17)

    def test_articles_start_with_paragraph_break(self) -> None:
        c = small()
        self.assertEqual(int(c.article_tokens[0]), 0)
        self.assertTrue(np.all(np.diff(c.article_tokens) > 0))
        for first in c.article_tokens.tolist():
            token = c.data[c.offsets[first] : c.offsets[first + 1]]
            self.assertTrue(token.startswith(ARTICLE_LEAD), token)
            self.assertRegex(token[len(ARTICLE_LEAD) :].decode(), r"^[A-Z][a-z]+$")

    def test_paragraph_breaks_only_at_paragraph_starts(self) -> None:
        c = small()
        starts = [i for i in range(c.tokens) if c.data.startswith(ARTICLE_LEAD, int(c.offsets[i]))]
        self.assertEqual(len(starts), ARTICLES * PARAGRAPHS_PER_ARTICLE)
        self.assertEqual(starts[::PARAGRAPHS_PER_ARTICLE], c.article_tokens.tolist())
        # No token contains a break other than at its start.
        self.assertEqual(c.data.count(ARTICLE_LEAD), len(starts))

    def test_offsets(self) -> None:
        c = small()
        self.assertEqual(len(c.offsets), c.tokens + 1)
        self.assertEqual(int(c.offsets[0]), 0)
        self.assertEqual(int(c.offsets[-1]), len(c.data))
        self.assertTrue(np.all(np.diff(c.offsets.astype(np.int64)) > 0))

    def test_view_is_the_data(self) -> None:
        c = small()
        self.assertEqual(bytes(c.view[10:50]), c.data[10:50])

    def test_text_skips_the_lead(self) -> None:
        c = small()
        first = int(c.article_tokens[3])
        text = c.text(first, 5)
        self.assertFalse(text.startswith("\n"))
        self.assertRegex(text, r"^[A-Z]")


class ContentTests(SynchronousTestCase):
    def test_data_is_json_string_content(self) -> None:
        c = small()
        decoded = json.loads('"' + c.data.decode("utf-8") + '"')
        self.assertEqual(decoded, small_text())
        # Only \n is escaped; no quotes, no other backslashes.
        self.assertNotIn(b'"', c.data)
        self.assertEqual(c.data.count(b"\\"), c.data.count(b"\\n"))

    def test_alphabet(self) -> None:
        self.assertEqual(
            set(small_text()) - set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.\n"),
            set(),
        )

    def test_vocabulary(self) -> None:
        vocabulary = set(VOCABULARY)
        self.assertGreater(len(vocabulary), 50)
        words = re.findall(r"[A-Za-z]+", small_text())
        used = set()
        for word in set(words):
            lowered = word.lower()
            self.assertIn(lowered, vocabulary)
            self.assertIn(word, (lowered, lowered.capitalize()))
            used.add(lowered)
        # A corpus this size uses the whole pool.
        self.assertEqual(used, vocabulary)

    def test_vocabulary_is_python_lorem(self) -> None:
        import lorem

        self.assertEqual(set(VOCABULARY), set(lorem._TEXT))
        self.assertIn("lorem", VOCABULARY)
        self.assertIn("ipsum", VOCABULARY)

    def test_text_starts_and_ends(self) -> None:
        text = small_text()
        self.assertTrue(text.startswith("\n\n"))
        self.assertTrue(text.endswith("."))
        self.assertNotIn("  ", text)
        self.assertNotIn("\n\n\n", text)
        self.assertNotIn(" \n", text)
        self.assertNotIn(" ,", text)
        self.assertNotIn(" .", text)


class ShapeTests(SynchronousTestCase):
    def paragraphs(self) -> list[str]:
        pieces = small_text().split("\n\n")
        self.assertEqual(pieces[0], "")
        return pieces[1:]

    def test_paragraphs_per_article_and_sentences_per_paragraph(self) -> None:
        paragraphs = self.paragraphs()
        self.assertEqual(len(paragraphs), ARTICLES * PARAGRAPHS_PER_ARTICLE)
        counts = set()
        for paragraph in paragraphs:
            self.assertTrue(paragraph.endswith("."))
            sentences = paragraph.count(".")
            self.assertGreaterEqual(sentences, 5)
            self.assertLessEqual(sentences, 10)
            counts.add(sentences)
        self.assertEqual(counts, set(range(5, 11)))

    def test_sentence_shape(self) -> None:
        lengths = set()
        commas = set()
        for paragraph in self.paragraphs():
            sentences = paragraph.split(".")
            self.assertEqual(sentences[-1], "")
            for i, sentence in enumerate(sentences[:-1]):
                # Sentences after the first are separated by one space.
                if i:
                    self.assertTrue(sentence.startswith(" "), sentence)
                    sentence = sentence[1:]
                words = sentence.replace(",", "").split(" ")
                self.assertTrue(all(w.isalpha() for w in words), sentence)
                self.assertTrue(words[0][0].isupper(), sentence)
                self.assertTrue(all(w.islower() for w in words[1:]), sentence)
                self.assertGreaterEqual(len(words), 4, sentence)
                self.assertLessEqual(len(words), 8 * 3, sentence)
                # Up to two comma clauses, each of 4..8 words.
                clauses = sentence.split(",")
                self.assertLessEqual(len(clauses), 3, sentence)
                for clause in clauses:
                    self.assertGreaterEqual(len(clause.split()), 4, sentence)
                    self.assertLessEqual(len(clause.split()), 8, sentence)
                for clause in clauses[1:]:
                    self.assertTrue(clause.startswith(" "), sentence)
                lengths.add(len(words))
                commas.add(len(clauses) - 1)
        self.assertEqual(commas, {0, 1, 2})
        self.assertEqual(min(lengths), 4)
        self.assertGreater(max(lengths), 16)

    def test_sentence_token_counts(self) -> None:
        # Word tokens plus commas plus the full stop: at most 8 * 3 + 2 + 1.
        from mockoai.sim.tokens import count_text

        for sentence in re.findall(r"[A-Z][^.]*\.", small_text()):
            self.assertGreaterEqual(count_text(sentence), 5)
            self.assertLessEqual(count_text(sentence), 8 * 3 + 2 + 1)


class FullSizeTests(SynchronousTestCase):
    def test_default_build_is_fast_and_sized(self) -> None:
        started = time.perf_counter()
        c = corpus.build()
        elapsed = time.perf_counter() - started
        self.assertEqual(c.articles, 4096)
        self.assertLess(elapsed, 3.0)
        self.assertGreater(c.build_seconds, 0.0)
        self.assertLessEqual(c.build_seconds, elapsed)
        average = len(c.data) / c.articles
        self.assertGreaterEqual(average, 1.5 * 1024)
        self.assertLessEqual(average, 3 * 1024)
        self.assertEqual(int(c.offsets[-1]), len(c.data))
        self.assertEqual(c.offsets.dtype, np.int32)
