"""
``etc/k8s/``: every manifest validated against Kubernetes' published schemas
(kubernetes-validate, strict: unknown fields are errors) and the PodMonitor
against prometheus-operator's CRD schema (vendored in ``tests/k8s/``), then
the facts the manifests must agree on: workers from the CPU request, the
profile a real mockoai loads, probes on /health, the grace period inside
the termination grace period, selectors that select.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from typing import Any

import jsonschema
import yaml
from twisted.trial.unittest import SkipTest, TestCase

from mockoai.ops.config import FIELDS_BY_NAME, load_settings
from tests.support import REPO_ROOT

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

K8S = os.path.join(REPO_ROOT, "etc", "k8s")
#: Kubernetes releases the manifests must be valid for: the oldest still in
#: wide use whose APIs they need (autoscaling/v2, policy/v1) and the newest
#: kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", "latest")
#: Kinds Kubernetes does not serve itself, checked otherwise.
NOT_BUILT_IN = {"PodMonitor", "Kustomization"}

Doc = dict[str, Any]


def manifests() -> dict[str, Doc]:
    """Every document of etc/k8s, by file name (one document per file)."""
    out = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml"):
            with open(os.path.join(K8S, name)) as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
            assert len(docs) == 1, f"{name}: one document per file"
            out[name] = docs[0]
    return out


def by_kind(docs: dict[str, Doc]) -> dict[str, Doc]:
    return {doc["kind"]: doc for doc in docs.values()}


def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate.utils as utils
    except ImportError:
        raise SkipTest("kubernetes-validate is not installed (pip install '.[test]')") from None
    return utils


class SchemaTests(TestCase):
    """The manifests as the API server (and kubectl's strict validation) will see them."""

    def setUp(self) -> None:
        self.docs = manifests()

    def validate(self, doc: Doc) -> list[str]:
        """kubernetes-validate's verdicts on ``doc``, one per Kubernetes version."""
        utils = kubernetes_validate()
        verdicts = []
        for version in KUBERNETES_VERSIONS:
            if version == "latest":
                version = utils.latest_version()
            verdicts.append(utils.validate(doc, version, strict=True))
        return verdicts

    def test_built_in_kinds_against_kubernetes_schemas(self) -> None:
        kinds = set()
        for name, doc in self.docs.items():
            if doc["kind"] in NOT_BUILT_IN:
                continue
            try:
                self.validate(doc)
            except Exception as e:
                self.fail(f"{name}: {e}")
            kinds.add(doc["kind"])
        self.assertEqual(
            kinds,
            {
                "ConfigMap",
                "Deployment",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
                "Service",
            },
        )

    def test_strict_validation_rejects_a_misspelt_field(self) -> None:
        utils = kubernetes_validate()
        deployment = copy.deepcopy(by_kind(self.docs)["Deployment"])
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["readinesProbe"] = container.pop("readinessProbe")
        with self.assertRaises(utils.ValidationError):
            self.validate(deployment)

    def test_pod_monitor_against_the_crd_schema(self) -> None:
        with open(os.path.join(REPO_ROOT, "tests", "k8s", "podmonitor.schema.json")) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        monitor = by_kind(self.docs)["PodMonitor"]
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual([e.message for e in validator.iter_errors(monitor)], [])
        # The schema is not vacuous: a misspelt key and a bad duration fail it.
        misspelt = copy.deepcopy(monitor)
        misspelt["spec"]["podMetricEndpoints"] = misspelt["spec"].pop("podMetricsEndpoints")
        self.assertFalse(validator.is_valid(misspelt))
        bad_interval = copy.deepcopy(monitor)
        bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
        self.assertFalse(validator.is_valid(bad_interval))

    def test_kustomization_lists_every_manifest(self) -> None:
        kustomization = self.docs["kustomization.yaml"]
        self.assertEqual(kustomization["kind"], "Kustomization")
        others = sorted(name for name in self.docs if name != "kustomization.yaml")
        self.assertEqual(sorted(kustomization["resources"]), others)
        image = by_kind(self.docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        [entry] = kustomization["images"]
        self.assertEqual(image["image"].split(":")[0], entry["name"])


class ConsistencyTests(TestCase):
    """What the manifests must agree on with each other, the image and mockoai."""

    def setUp(self) -> None:
        self.kinds = by_kind(manifests())
        self.deployment = self.kinds["Deployment"]
        self.pod = self.deployment["spec"]["template"]["spec"]
        [self.container] = self.pod["containers"]
        self.labels = self.deployment["spec"]["template"]["metadata"]["labels"]

    def env(self) -> dict[str, Any]:
        return {e["name"]: e for e in self.container["env"]}

    def profile(self) -> tuple[str, str]:
        """(the path --config names, the profile's text from the ConfigMap mounted there)."""
        args = self.container["args"]
        path = args[args.index("--config") + 1]
        [mount] = [m for m in self.container["volumeMounts"] if m["mountPath"] == path]
        [volume] = [v for v in self.pod["volumes"] if v["name"] == mount["name"]]
        configmap = self.kinds["ConfigMap"]
        self.assertEqual(volume["configMap"]["name"], configmap["metadata"]["name"])
        return path, configmap["data"][mount["subPath"]]

    def test_workers_follow_the_cpu_request(self) -> None:
        workers = self.env()["MOCKOAI_WORKERS"]["valueFrom"]["resourceFieldRef"]
        self.assertEqual(workers["resource"], "requests.cpu")
        self.assertEqual(workers["containerName"], self.container["name"])
        self.assertEqual(str(workers["divisor"]), "1")  # whole cores, rounded up
        request = str(self.container["resources"]["requests"]["cpu"])
        self.assertRegex(request, r"^[1-9][0-9]*$", "a whole number of cores")
        self.assertEqual(FIELDS_BY_NAME["workers"].parse(request), int(request))
        self.assertNotIn("cpu", self.container["resources"].get("limits", {}))

    def test_the_profile_and_environment_load_in_mockoai(self) -> None:
        path, text = self.profile()
        self.assertEqual(path, "/etc/mockoai/profile.toml")
        environ = {
            name: entry.get("value", self.container["resources"]["requests"]["cpu"])
            for name, entry in self.env().items()
        }
        self.assertEqual(set(environ), {"MOCKOAI_LISTEN", "MOCKOAI_WORKERS"})
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write(text)
            f.flush()
            # Unknown keys or variables, and bad values, raise here.
            load_settings({"config": f.name}, environ=environ)

    def test_termination_outlasts_prestop_and_drain(self) -> None:
        grace = float(tomllib.loads(self.profile()[1])["grace_period"])
        command = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(command[0], "sleep")
        pause = float(command[1])
        self.assertGreater(self.pod["terminationGracePeriodSeconds"], pause + grace)

    def test_probes_on_health(self) -> None:
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports, {"http": 3000})
        self.assertEqual(self.env()["MOCKOAI_LISTEN"]["value"], "tcp:3000")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = self.container[probe]["httpGet"]
            self.assertEqual((get["path"], get["port"]), ("/health", "http"), probe)
        # One failed check takes a draining pod (503) out of the Service.
        self.assertEqual(self.container["readinessProbe"]["failureThreshold"], 1)

    def test_runs_as_the_image_user(self) -> None:
        with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
            users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", f.read(), re.MULTILINE)
        uid, gid = users[-1]
        context = self.pod["securityContext"]
        self.assertTrue(context["runAsNonRoot"])
        self.assertEqual((str(context["runAsUser"]), str(context["runAsGroup"])), (uid, gid))
        self.assertTrue(self.container["securityContext"]["readOnlyRootFilesystem"])
        # --workers' run directory needs a writable /tmp.
        self.assertIn("/tmp", [m["mountPath"] for m in self.container["volumeMounts"]])

    def test_selectors_select_the_pods(self) -> None:
        def selects(selector: dict[str, str]) -> bool:
            return all(self.labels.get(k) == v for k, v in selector.items())

        self.assertTrue(selects(self.deployment["spec"]["selector"]["matchLabels"]))
        self.assertTrue(selects(self.kinds["Service"]["spec"]["selector"]))
        self.assertTrue(
            selects(self.kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
        )
        monitor = self.kinds["PodMonitor"]["spec"]
        self.assertTrue(selects(monitor["selector"]["matchLabels"]))
        ports = [p["name"] for p in self.container["ports"]]
        self.assertEqual([e["port"] for e in monitor["podMetricsEndpoints"]], ["http"])
        self.assertEqual(monitor["podMetricsEndpoints"][0]["path"], "/metrics")
        self.assertIn(self.kinds["Service"]["spec"]["ports"][0]["targetPort"], ports)

    def test_autoscaler_scales_the_deployment_on_cpu(self) -> None:
        hpa = self.kinds["HorizontalPodAutoscaler"]
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        target = hpa["spec"]["scaleTargetRef"]
        self.assertEqual(
            (target["kind"], target["name"]), ("Deployment", self.deployment["metadata"]["name"])
        )
        [metric] = hpa["spec"]["metrics"]
        self.assertEqual(metric["resource"]["name"], "cpu")
        # The budget leaves pods to serve at the autoscaler's floor.
        budget = self.kinds["PodDisruptionBudget"]["spec"]
        self.assertLess(budget["maxUnavailable"], hpa["spec"]["minReplicas"])
