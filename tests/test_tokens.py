"""The token definition and the prompt-counting recipe."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mockoai.sim import corpus, tokens
from mockoai.sim.tokens import (
    IMAGE_TOKENS,
    REPLY_PRIMING,
    TOKEN,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    count_content,
    count_messages,
    count_prompt,
    count_text,
    count_value,
)

#: count_text's implementations: each interpreter uses one, the tests run both.
COUNTERS = (tokens._count_in_c, tokens._count_in_a_loop)


@functools.cache
def small_corpus() -> corpus.Corpus:
    return corpus.build(articles=64)


class TokenDefinitionTests(SynchronousTestCase):
    def test_words_carry_leading_whitespace(self) -> None:
        self.assertEqual(TOKEN.findall("Hello world"), ["Hello", " world"])
        self.assertEqual(TOKEN.findall("  spaced\t\tout"), ["  spaced", "\t\tout"])
        self.assertEqual(TOKEN.findall("\n\nPara graph"), ["\n\nPara", " graph"])

    def test_trailing_whitespace_is_no_token(self) -> None:
        self.assertEqual(TOKEN.findall("word   "), ["word"])
        self.assertEqual(count_text("   "), 0)
        self.assertEqual(count_text(""), 0)

    def test_punctuation_is_its_own_token(self) -> None:
        self.assertEqual(TOKEN.findall("Hello, world!"), ["Hello", ",", " world", "!"])
        self.assertEqual(TOKEN.findall("a.b"), ["a", ".", "b"])
        self.assertEqual(TOKEN.findall('{"k": 1}'), ["{", '"', "k", '"', ":", " 1", "}"])
        self.assertEqual(TOKEN.findall("..."), [".", ".", "."])

    def test_word_characters(self) -> None:
        # \w: letters, digits and underscore, Unicode included.
        self.assertEqual(TOKEN.findall("snake_case 42 héllo"), ["snake_case", " 42", " héllo"])

    def test_long_words_split_every_16_characters(self) -> None:
        self.assertEqual(count_text("a" * 16), 1)
        self.assertEqual(count_text("a" * 17), 2)
        self.assertEqual(count_text("a" * 32), 2)
        self.assertEqual(count_text("a" * 33), 3)
        self.assertEqual(TOKEN.findall(" " + "b" * 20), [" " + "b" * 16, "bbbb"])
        self.assertEqual(count_text("x" * 1600), 100)

    def test_count_text(self) -> None:
        self.assertEqual(count_text("You are a helpful assistant."), 6)
        self.assertEqual(count_text("Lorem ipsum dolor sit amet, consectetur."), 8)

    @settings(max_examples=500)
    @given(
        st.lists(
            # Every ASCII class the fast path tells apart, long words, and
            # some non-ASCII (which takes the regex path).
            st.sampled_from(
                [*"aZ9_ \t\n\x0b\x1c\x1f.,-!'\"\\", "x" * 15, "y" * 17, "é", "日", "\u00a0"]
            ),
            max_size=40,
        ).map("".join)
    )
    def test_ascii_fast_path_counts_as_the_regex(self, text: str) -> None:
        ascii_only = text.encode("ascii", "ignore").decode()
        for count in COUNTERS:
            self.assertEqual(count(text), len(TOKEN.findall(text)))
            self.assertEqual(count(ascii_only), len(TOKEN.findall(ascii_only)))

    @settings(max_examples=500)
    @given(
        st.lists(
            # Any ASCII character (marks next to marks, words, whitespace),
            # and words around the 16-character split.
            st.one_of(
                st.characters(max_codepoint=127),
                st.integers(1, 40).map(lambda n: "w" * n),
            ),
            max_size=60,
        ).map("".join)
    )
    def test_every_ascii_character_counts_as_the_regex(self, text: str) -> None:
        for count in COUNTERS:
            self.assertEqual(count(text), len(TOKEN.findall(text)))

    def test_count_text_is_one_of_them(self) -> None:
        self.assertIn(count_text, COUNTERS)


class CountValueTests(SynchronousTestCase):
    def test_scalars(self) -> None:
        self.assertEqual(count_value("two words"), 2)
        self.assertEqual(count_value(12345), 1)
        self.assertEqual(count_value(1.5), 1)
        self.assertEqual(count_value(None), 0)
        self.assertEqual(count_value(True), 0)

    def test_containers_are_walked(self) -> None:
        self.assertEqual(count_value(["a b", {"k": "c d e", "n": 3}]), 2 + 3 + 1)
        # Keys are not counted, only values.
        self.assertEqual(count_value({"very long key name": None}), 0)

    def test_content_parts(self) -> None:
        parts = [
            {"type": "text", "text": "Hello world"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "input_image", "image_url": "data:..."},
            {"type": "refusal", "refusal": "No way"},
        ]
        self.assertEqual(count_content(parts), 2 + IMAGE_TOKENS + IMAGE_TOKENS + 2)
        self.assertEqual(count_content("plain text"), 2)
        self.assertEqual(count_content(None), 0)
        # Unknown part types: their values are counted.
        self.assertEqual(count_content([{"type": "input_audio", "data": "abc"}]), 2)


class CountMessagesTests(SynchronousTestCase):
    def test_constants(self) -> None:
        self.assertEqual((TOKENS_PER_MESSAGE, TOKENS_PER_NAME, REPLY_PRIMING), (3, 1, 3))
        self.assertEqual(IMAGE_TOKENS, 85)

    def test_no_messages_is_reply_priming(self) -> None:
        self.assertEqual(count_messages([]), 3)

    def test_one_message(self) -> None:
        # 3 framing + "user" 1 + "Hello world" 2, then 3 reply priming.
        self.assertEqual(count_messages([{"role": "user", "content": "Hello world"}]), 9)

    def test_system_and_user(self) -> None:
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello!"},
        ]
        # (3 + 1 + 6) + (3 + 1 + 2) + 3
        self.assertEqual(count_messages(messages), 19)

    def test_name_costs_one_more(self) -> None:
        plain = count_messages([{"role": "user", "content": "Hi"}])
        named = count_messages([{"role": "user", "name": "bob", "content": "Hi"}])
        self.assertEqual(plain, 3 + 1 + 1 + 3)
        self.assertEqual(named, plain + 1 + 1)  # "bob" plus the name surcharge
        long_name = count_messages([{"role": "user", "name": "alice_smith_jr", "content": "Hi"}])
        self.assertEqual(long_name, named)

    def test_content_parts(self) -> None:
        message = {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        }
        # "What is in this image?" = 6 tokens
        self.assertEqual(count_messages([message]), 3 + 1 + 6 + 85 + 3)

    def test_tool_calls_and_tool_results(self) -> None:
        messages = [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ]
        # assistant: 3 + 1 + 0 + ("call_1" 1, "function" 1, "f" 1, "{}" 2)
        # tool: 3 + 1 + "call_1" 1 + "42" 1
        self.assertEqual(count_messages(messages), (3 + 1 + 5) + (3 + 1 + 1 + 1) + 3)


def recipe(messages: list[dict[str, object]]) -> int:
    """OpenAI's recipe as the docstring says it, for count_messages to agree with."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += count_content(value) if key == "content" else count_value(value)
            total += TOKENS_PER_NAME if key == "name" else 0
    return total


_TEXTS = st.text(alphabet=st.sampled_from("ab_ ,.\né"), max_size=40)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXTS, inner, max_size=3),
    max_leaves=8,
)
_PARTS = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "refusal", "image_url", "input_audio"])},
        optional={"text": _VALUES, "refusal": _VALUES},
    )
    | _VALUES,
    max_size=3,
)


class CountMessagesAgreesWithTheRecipe(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    # Known roles (looked up) and others (counted).
                    "role": st.sampled_from(["system", "user", "tool", "robot", "two words"])
                    | _VALUES,
                    "content": _TEXTS | _PARTS | _VALUES,
                    "name": _VALUES,
                    "tool_call_id": _VALUES,
                },
            ),
            max_size=4,
        )
    )
    def test_count_messages(self, messages: list[dict[str, object]]) -> None:
        self.assertEqual(count_messages(messages), recipe(messages))


class CountPromptTests(SynchronousTestCase):
    def test_text(self) -> None:
        self.assertEqual(count_prompt("Say this is a test"), 5)
        self.assertEqual(count_prompt(""), 0)

    def test_token_ids(self) -> None:
        self.assertEqual(count_prompt([1, 2, 3]), 3)
        self.assertEqual(count_prompt([50256] * 100), 100)

    def test_other(self) -> None:
        self.assertEqual(count_prompt(None), 0)
        self.assertEqual(count_prompt(17), 0)


class TokenProperties(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.text(), st.text())
    def test_count_is_monotone_under_appending(self, a: str, b: str) -> None:
        self.assertGreaterEqual(count_text(a + b), count_text(a))

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.sampled_from("ab ,.\n_1é"), max_size=200))
    def test_tokens_are_a_partition_of_the_text(self, text: str) -> None:
        # Joined tokens give back the text, minus trailing whitespace only.
        self.assertEqual("".join(TOKEN.findall(text)), text.rstrip())

    def test_whole_corpus_retokenizes_to_its_count(self) -> None:
        c = small_corpus()
        self.assertEqual(count_text(corpus.unescape(c.data)), c.tokens)

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_every_token_slice_retokenizes(self, data: st.DataObject) -> None:
        c = small_corpus()
        first = data.draw(st.integers(0, c.tokens - 1))
        count = data.draw(st.integers(0, min(600, c.tokens - first)))
        text = corpus.unescape(c.data[c.offsets[first] : c.offsets[first + count]])
        self.assertEqual(count_text(text), count)
        # And every single token of the slice is exactly one token.
        for i in range(first, min(first + count, first + 20)):
            piece = corpus.unescape(c.data[c.offsets[i] : c.offsets[i + 1]])
            self.assertEqual(TOKEN.fullmatch(piece) is not None, True, piece)

    @settings(max_examples=50, deadline=None)
    @given(st.data())
    def test_answers_from_article_starts_retokenize(self, data: st.DataObject) -> None:
        c = small_corpus()
        article = data.draw(st.integers(0, c.articles - 2))
        first = int(c.article_tokens[article])
        count = data.draw(st.integers(1, 500))
        self.assertEqual(tokens.count_text(c.text(first, count)), count)
