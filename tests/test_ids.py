"""Response and request ids: OpenAI's shapes, unique, and cheap."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from mockoai.pipeline.ids import IdMaker, _base62

COMPLETION = re.compile(r"^[A-Za-z0-9]{29}$")
REQUEST = re.compile(rb"^req_[0-9a-f]{32}$")


class IdMakerTests(SynchronousTestCase):
    def test_shapes(self) -> None:
        ids = IdMaker()
        self.assertRegex(ids.completion(), COMPLETION)
        self.assertRegex(ids.request(), REQUEST)

    def test_unique_across_the_cached_digits(self) -> None:
        # The last two counter digits come from a table and the eight before
        # them are cached: cross several of their 3,844-id rollovers.
        ids = IdMaker(b"\x01" * 16)
        made = [ids.completion() for _ in range(3 * 3844 + 10)]
        self.assertEqual(len(set(made)), len(made))
        for count, made_id in enumerate(made, 1):
            self.assertEqual(made_id, ids._prefix + _base62(count, 10))

    def test_processes_differ(self) -> None:
        self.assertNotEqual(IdMaker().completion(), IdMaker().completion())
        self.assertNotEqual(IdMaker(b"\x01" * 16).completion(), IdMaker(b"\x02" * 16).completion())

    def test_requests_and_completions_share_the_counter(self) -> None:
        ids = IdMaker(b"\x00" * 16)
        ids.request()
        self.assertEqual(ids.completion(), ids._prefix + _base62(2, 10))
