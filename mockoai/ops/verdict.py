# -*- test-case-name: tests.test_verdict -*-
"""
The verdict on each client: how it behaved under the faults it met, read
from the journal (L{mockoai.ops.journal}), for ``GET /_mockoai/verdict``.

A client is an API key, else an address.  A retry is the client's next
request with the same body (the same method, endpoint and bytes) after an
error answer.  What is judged:

- after a retryable error (408, 409, 429, 5xx: what the official SDKs
  retry), whether each retry waited the ``Retry-After`` it was given, and,
  without one, whether it waited at all and whether the waits grew
  (exponential backoff);
- retries of errors that retrying cannot mend (400, 401, 403, 404, 413,
  422): a client should not send the same request again;
- retry storms: more retries of one request than any SDK makes;
- streams abandoned part-way, and how long the client took to get a
  success after a run of failures (its recovery).

A client is ``good`` when nothing above counts against it, else ``bad``
with the reasons.  Only what the journal holds is judged
(``--journal-size`` per worker).
"""

from __future__ import annotations

from typing import Any

#: What the official SDKs retry (openai-python, anthropic-sdk-python).
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
#: What sending again cannot mend.
FINAL = frozenset({400, 401, 403, 404, 413, 422})
#: A wait shorter than this (seconds), with no Retry-After, is "at once".
AT_ONCE = 0.1
#: Slack on a Retry-After: a wait within 5 % (and 50 ms) of it counts as waited.
_SLACK = 0.95
_SLACK_SECONDS = 0.05
#: Waits between retries should grow by at least this much on average.
GROWTH = 1.3
#: More retries of one request than this is a storm.
STORM = 10
#: A request sent again more than this long after is a new one, not a retry.
RETRY_HORIZON = 120.0


def judge(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Every client's verdict over ``entries`` (the journal's records, any order)."""
    clients: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(entries, key=lambda e: (e["arrived"], e["time"])):
        clients.setdefault(entry["client"], []).append(entry)
    return {
        "clients": {client: _judge(requests) for client, requests in sorted(clients.items())},
        "requests": len(entries),
    }


def _judge(requests: list[dict[str, Any]]) -> dict[str, Any]:
    retries: list[dict[str, Any]] = []
    wrong: list[dict[str, Any]] = []
    chains: list[list[float]] = []
    lengths: list[int] = []
    errors: dict[str, int] = {}
    abandoned = 0
    recoveries: list[float] = []
    failing_since: float | None = None
    last_failure = 0.0
    retried = set()
    for i, entry in enumerate(requests):
        status = entry["status"]
        if status >= 400:
            errors[str(status)] = errors.get(str(status), 0) + 1
        if entry["outcome"] == "abandoned" and entry.get("stream"):
            abandoned += 1
        if status in RETRYABLE:
            if failing_since is None:
                failing_since = entry["time"]
            last_failure = entry["time"]
        elif status < 400 and entry["outcome"] == "answered" and failing_since is not None:
            recoveries.append(round(entry["arrived"] - last_failure, 3))
            failing_since = None
        if i in retried or not entry.get("body_crc"):
            continue
        chain = _chain(requests, i)
        if not chain:
            continue
        gaps: list[float] = []
        for before, after in zip([i, *chain], chain):
            retried.add(after)
            failed = requests[before]
            gap = requests[after]["arrived"] - failed["time"]
            code = failed["status"]
            told = failed.get("retry_after")
            if told is None and code not in FINAL:
                gaps.append(gap)
            record = {
                "status": code,
                "at": failed["time"],
                "waited": round(gap, 3),
                "retry_after": told,
            }
            if code in FINAL:
                wrong.append(record)
                continue
            if told is not None:
                record["honoured"] = gap >= told * _SLACK - _SLACK_SECONDS
            else:
                record["honoured"] = gap >= AT_ONCE
            retries.append(record)
        chains.append(gaps)
        lengths.append(len(chain))
    reasons = []
    ignored = [r for r in retries if r["retry_after"] is not None and not r["honoured"]]
    if ignored:
        reasons.append(
            f"{len(ignored)} retr{'y' if len(ignored) == 1 else 'ies'} ignored Retry-After"
        )
    hasty = [r for r in retries if r["retry_after"] is None and not r["honoured"]]
    if hasty:
        reasons.append(f"{_retries(len(hasty))} sent at once")
    growth = _growth(chains)
    if growth is not None and growth < GROWTH:
        reasons.append(f"waits between retries did not grow (x{growth:.2f} on average)")
    if wrong:
        reasons.append(
            f"{_retries(len(wrong))} of errors that cannot succeed "
            f"({', '.join(sorted({str(r['status']) for r in wrong}))})"
        )
    longest = max(lengths, default=0)
    if longest > STORM:
        reasons.append(f"a retry storm: {longest} retries of one request")
    return {
        "verdict": "bad" if reasons else "good",
        "reasons": reasons,
        "requests": len(requests),
        "errors": errors,
        "retries": len(retries),
        "retries_after_retry_after": sum(1 for r in retries if r["retry_after"] is not None),
        "waited_retry_after": sum(
            1 for r in retries if r["retry_after"] is not None and r["honoured"]
        ),
        "retries_of_final_errors": len(wrong),
        "longest_retry_chain": longest,
        "backoff_growth": None if growth is None else round(growth, 2),
        "streams_abandoned": abandoned,
        "recovery_s": recoveries,
        "recovered": failing_since is None,
        "details": (retries + wrong)[-50:],
    }


def _retries(n: int) -> str:
    return f"{n} retr{'y' if n == 1 else 'ies'}"


def _chain(requests: list[dict[str, Any]], first: int) -> list[int]:
    """The retries that followed error answer ``first`` (each after an error of its own)."""
    chain: list[int] = []
    current = first
    while requests[current]["status"] >= 400:
        failed = requests[current]
        found = None
        for j in range(current + 1, len(requests)):
            other = requests[j]
            if other["arrived"] - failed["time"] > RETRY_HORIZON:
                break
            if (
                other["body_crc"] == failed["body_crc"]
                and other["endpoint"] == failed["endpoint"]
                and other["method"] == failed["method"]
                and other["arrived"] >= failed["arrived"]
            ):
                found = j
                break
        if found is None:
            break
        chain.append(found)
        current = found
    return chain


def _growth(chains: list[list[float]]) -> float | None:
    """
    The mean ratio between consecutive waits of a retry chain that no
    Retry-After paced (None: no chain of two such waits to judge).
    """
    ratios = [b / a for gaps in chains for a, b in zip(gaps, gaps[1:]) if a > 0]
    return sum(ratios) / len(ratios) if ratios else None


def text(verdict: dict[str, Any]) -> str:
    """The verdict in plain words, a paragraph per client."""
    lines = [f"{verdict['requests']} request(s) judged"]
    for client, judged in verdict["clients"].items():
        lines.append("")
        lines.append(f"{client}: {judged['verdict'].upper()}")
        for reason in judged["reasons"]:
            lines.append(f"  - {reason}")
        lines.append(
            f"  {judged['requests']} request(s), errors {judged['errors'] or 'none'}, "
            f"{judged['retries']} retr{'y' if judged['retries'] == 1 else 'ies'} "
            f"({judged['waited_retry_after']} of {judged['retries_after_retry_after']} "
            "waited their Retry-After)"
        )
        if judged["backoff_growth"] is not None:
            lines.append(f"  backoff growth x{judged['backoff_growth']}")
        if judged["streams_abandoned"]:
            lines.append(f"  {judged['streams_abandoned']} stream(s) abandoned")
        if judged["recovery_s"]:
            lines.append(
                "  recovered after failures in "
                + ", ".join(f"{s:g} s" for s in judged["recovery_s"])
            )
        if not judged["recovered"]:
            lines.append("  still failing at the end of the journal")
    return "\n".join(lines) + "\n"
