"""
``etc/grafana/mockoai.json``: a Grafana dashboard Grafana can import, and
every series its PromQL queries exists in a live ``/metrics`` scrape, with
the labels the queries match on, of the type the functions need
(``histogram_quantile`` over ``_bucket`` series, ``rate`` over counters and
histograms).  Expressions are read by a small extractor here; where
``promql-parser`` (Prometheus' grammar, a Rust extension: CPython only) is
installed, each must also parse and yield the same selectors.
"""

from __future__ import annotations

import http.client
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import REPO_ROOT, TwistdProcess

DASHBOARD = os.path.join(REPO_ROOT, "etc", "grafana", "mockoai.json")
#: Labels Prometheus attaches to every scraped series (static configs,
#: Kubernetes service discovery, prometheus-operator monitors).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service"})
#: Grafana's interval variables, as Prometheus would see them substituted.
INTERVALS = ("$__rate_interval", "$__interval", "$__range")
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "atan2", "inf", "nan"}
)
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
NAME = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*(\{[^{}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
RANGE = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class Selector:
    """One series selector of an expression: its metric and the labels it matches on."""

    metric: str
    labels: frozenset[str]
    #: The innermost function or aggregation it is an argument of (or "").
    within: tuple[str, ...] = ()


@dataclass
class Query:
    where: str
    expr: str
    selectors: list[Selector] = field(default_factory=list)
    #: Labels named by ``by``/``without``/``on``/``ignoring``/``group_*``.
    grouping: set[str] = field(default_factory=set)


def substitute(expr: str) -> str:
    """An expression as Prometheus receives it from Grafana (variables filled in)."""
    for name in INTERVALS:
        expr = expr.replace(name, "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def _calls(text: str) -> Iterator[tuple[str, int, int]]:
    """(function, start, end) of every call's parenthesized arguments."""
    for match in re.finditer(r"([a-zA-Z_]\w*)\s*\(", text):
        depth, start = 0, match.end() - 1
        for i in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                yield match.group(1), start, i
                break


def parse_query(where: str, expr: str) -> Query:
    """The selectors and grouping labels of ``expr`` (variables substituted)."""
    query = Query(where, expr)
    text = STRING.sub('""', substitute(expr))
    text = RANGE.sub("", text)
    for match in GROUPING.finditer(text):
        query.grouping |= {label.strip() for label in match.group(2).split(",") if label.strip()}
    text = GROUPING.sub(lambda m: " " * len(m.group(0)), text)
    calls = [(name, start, end) for name, start, end in _calls(text) if name not in KEYWORDS]
    for match in NAME.finditer(text):
        name = match.group(1)
        rest = text[match.end() :].lstrip()
        if name in KEYWORDS or (rest.startswith("(") and not match.group(2)):
            continue  # an operator, or a function or aggregation being called
        labels = frozenset(MATCHER.findall(match.group(2) or ""))
        within = tuple(f for f, start, end in calls if start < match.start() < end)
        query.selectors.append(Selector(name, labels, within))
    return query


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append(parse_query(f"{panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        definition = variable["query"]["query"]
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition)
        assert match, f"variable {variable['name']}: {definition!r}"
        query = parse_query(f"variable {variable['name']}", match.group(1))
        query.grouping.add(match.group(2))
        out.append(query)
    return out


def load() -> dict[str, Any]:
    with open(DASHBOARD) as f:
        return json.load(f)  # type: ignore[no-any-return]


class DashboardTests(TestCase):
    """A dashboard Grafana imports as it is."""

    def setUp(self) -> None:
        self.dashboard = load()

    def test_grafana_model(self) -> None:
        d = self.dashboard
        self.assertIsInstance(d["schemaVersion"], int)
        self.assertGreaterEqual(d["schemaVersion"], 36)  # Grafana 9+
        self.assertEqual((d["uid"], d["title"]), ("mockoai", "mockoai"))
        self.assertIsNone(d["id"])  # import creates it
        [source] = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
        self.assertEqual((source["name"], source["query"]), ("DS_PROMETHEUS", "prometheus"))
        [needed] = d["__inputs"]
        self.assertEqual((needed["name"], needed["pluginId"]), ("DS_PROMETHEUS", "prometheus"))
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        for panel in d["panels"]:
            if panel["type"] != "row":
                self.assertEqual(panel["datasource"]["uid"], "${DS_PROMETHEUS}", panel["title"])
                self.assertTrue(panel["targets"], panel["title"])
                for target in panel["targets"]:
                    self.assertEqual(target["datasource"]["uid"], "${DS_PROMETHEUS}")
        for variable in d["templating"]["list"]:
            if variable["type"] == "query":
                self.assertEqual(variable["datasource"]["uid"], "${DS_PROMETHEUS}")

    def test_grid_is_24_wide_without_overlaps(self) -> None:
        taken: set[tuple[int, int]] = set()
        for panel in self.dashboard["panels"]:
            pos = panel["gridPos"]
            self.assertEqual(set(pos), {"h", "w", "x", "y"}, panel["title"])
            self.assertTrue(all(isinstance(v, int) and v >= 0 for v in pos.values()))
            self.assertLessEqual(pos["x"] + pos["w"], 24, panel["title"])
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            self.assertFalse(cells & taken, f"{panel['title']} overlaps another panel")
            taken |= cells

    def test_vllm_panels_and_mockoai_panels(self) -> None:
        titles = {p["title"] for p in self.dashboard["panels"]}
        vllm = {
            "E2E Request Latency",
            "Time To First Token Latency",
            "Inter Token Latency",
            "Token Throughput",
            "Scheduler State",
            "KV Cache Utilization",
            "Finish Reason",
            "Queue Time",
        }
        mockoai = {"Requests/s by endpoint and status", "Requests/s by model", "Errors/s"}
        self.assertLessEqual(vllm | mockoai, titles)
        for panel in self.dashboard["panels"]:
            if panel["title"] in {"E2E Request Latency", "Time To First Token Latency"}:
                legends = [t["legendFormat"] for t in panel["targets"]]
                self.assertEqual(legends, ["P99", "P95", "P90", "P50", "Mean"])

    def test_extractor(self) -> None:
        query = parse_query(
            "q",
            'histogram_quantile(0.9, sum by (le, model_name) (rate(a:b_bucket{x=~"$v", y="}"}'
            "[$__rate_interval]))) / on (pod) sum(up) > bool 0",
        )
        self.assertEqual(
            query.selectors,
            [
                Selector(
                    "a:b_bucket", frozenset({"x", "y"}), ("histogram_quantile", "sum", "rate")
                ),
                Selector("up", frozenset(), ("sum",)),
            ],
        )
        self.assertEqual(query.grouping, {"le", "model_name", "pod"})

    def test_promql_parses(self) -> None:
        try:
            import promql_parser
        except ImportError:
            raise SkipTest("promql-parser is not installed (CPython only)") from None
        for query in queries(self.dashboard):
            try:
                tree = promql_parser.parse(substitute(query.expr))
            except Exception as e:
                self.fail(f"{query.where}: {query.expr!r}: {e}")
            found: list[tuple[str, frozenset[str]]] = []

            def visit(node: Any, found: list[tuple[str, frozenset[str]]] = found) -> None:
                if isinstance(node, promql_parser.VectorSelector):
                    labels = frozenset(m.name for m in node.matchers.matchers)
                    found.append((node.name, labels))
                for child in ("expr", "lhs", "rhs", "vector_selector", "param"):
                    if getattr(node, child, None) is not None:
                        visit(getattr(node, child))
                for arg in getattr(node, "args", None) or ():
                    visit(arg)

            visit(tree)
            mine = sorted((s.metric, s.labels) for s in query.selectors)
            self.assertEqual(sorted(found), mine, query.where)


class LiveMetricsTests(TestCase):
    """Every series the dashboard reads is in a real server's scrape."""

    def scrape(self) -> dict[str, tuple[str, set[str]]]:
        """Sample name -> (its family's type, the label names it carries)."""
        server = TwistdProcess(
            ["--articles", "64", "--max-running", "8", "--itl", "1", "--rpm", "6"]
        )
        self.addCleanup(server.cleanup)
        server.start()

        def request(method: str, path: str, body: dict[str, Any] | None = None) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                payload = None if body is None else json.dumps(body)
                connection.request(method, path, payload, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                return response.status
            finally:
                connection.close()

        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        statuses = [
            request("POST", "/v1/chat/completions", {**chat, "max_tokens": 5}),
            request("POST", "/v1/chat/completions", {**chat, "max_tokens": 5, "stream": True}),
            request(
                "POST", "/v1/completions", {"model": "gpt-4o", "prompt": "hi", "max_tokens": 3}
            ),
            request("POST", "/v1/chat/completions", {"messages": []}),  # 400
            request("GET", "/v1/models"),
        ]
        # Past --rpm: 429s, which count as errors and as rejected.
        statuses += [request("POST", "/v1/chat/completions", chat) for _ in range(4)]
        self.assertEqual(statuses[:5], [200, 200, 200, 400, 200])
        self.assertIn(429, statuses[5:])
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
        server.stop()

        samples: dict[str, tuple[str, set[str]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                _, labels = samples.setdefault(sample.name, (family.type, set()))
                labels.update(sample.labels)
        return samples

    def test_every_queried_series_exists(self) -> None:
        samples = self.scrape()
        problems = []
        read = set()
        for query in queries(load()):
            if not query.selectors:
                problems.append(f"{query.where}: no series in {query.expr!r}")
            known_labels = set(TARGET_LABELS)
            for selector in query.selectors:
                where = f"{query.where}: {selector.metric}"
                if selector.metric not in samples:
                    problems.append(f"{where}: not in the scrape")
                    continue
                read.add(selector.metric)
                kind, labels = samples[selector.metric]
                known_labels |= labels
                unknown = selector.labels - labels - TARGET_LABELS
                if unknown:
                    problems.append(f"{where}: no label {sorted(unknown)}")
                if "histogram_quantile" in selector.within and not (
                    kind == "histogram" and selector.metric.endswith("_bucket")
                ):
                    problems.append(f"{where}: histogram_quantile over a {kind} sample")
                if {"rate", "increase", "irate"} & set(selector.within) and kind not in (
                    "counter",
                    "histogram",
                ):
                    problems.append(f"{where}: rate of a {kind}")
            for label in query.grouping - known_labels:
                problems.append(f"{query.where}: grouped by {label!r}, which no series has")
        self.assertEqual(problems, [])
        # The board covers vLLM's latency histograms, queue, KV and mockoai's counts.
        for series in (
            "vllm:e2e_request_latency_seconds_bucket",
            "vllm:time_to_first_token_seconds_bucket",
            "vllm:inter_token_latency_seconds_bucket",
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
            "vllm:request_success_total",
            "vllm:generation_tokens_total",
            "mockoai_requests_total",
            "mockoai_errors_total",
        ):
            self.assertIn(series, read)
