"""deploy/: the Kubernetes manifests and the compose file, checked offline (no cluster here).

Each manifest is checked against the Kubernetes API's own models as shipped in the official
``kubernetes`` Python client (generated from the API's OpenAPI spec): every field must exist in
its object's schema with the right type, and required fields must be present. That is what
``kubectl --validate`` checks; kubectl itself needs a server to fetch the schema from. The
compose file has no offline schema here (``docker compose config`` is not installed), so its
structure is checked below by hand. Both also get the checks no schema knows: settings names,
the drain time, selectors that select something.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml
from kubernetes.client import ApiClient

from appliance.cli.serve_cmd import DRAIN_S
from appliance.config import VENDOR_ENV, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UVICORN_CLOSE_S = 30  # serve_cmd's timeout_graceful_shutdown
SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,),
                                        "float": (int, float), "datetime": (str,),
                                        "bytes": (str,)}


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def model_name(doc: dict[str, Any]) -> str:
    version = doc["apiVersion"].split("/")[-1]
    return version[0].upper() + version[1:] + doc["kind"]


def schema_errors(data: Any, type_name: str, where: str) -> list[str]:
    """Fields unknown to, or of the wrong type for, the Kubernetes model ``type_name``."""
    if type_name == "object":
        return []
    if type_name.startswith(("list[", "List[")):
        if not isinstance(data, list):
            return [f"{where}: expected a list"]
        return [e for i, item in enumerate(data)
                for e in schema_errors(item, type_name[5:-1], f"{where}[{i}]")]
    if type_name.startswith(("dict(", "Dict[")):
        if not isinstance(data, dict):
            return [f"{where}: expected a mapping"]
        value_type = type_name[5:-1].split(", ", 1)[1]
        return [e for k, v in data.items() for e in schema_errors(v, value_type, f"{where}.{k}")]
    if type_name in SCALARS:
        ok = isinstance(data, SCALARS[type_name]) and not (
            type_name == "int" and isinstance(data, bool))
        return [] if ok else [f"{where}: expected {type_name}, got {data!r}"]
    model = getattr(k8s, type_name)
    if not isinstance(data, dict):
        return [f"{where}: expected a {type_name} mapping"]
    fields = {json: attr for attr, json in model.attribute_map.items()}
    errors = [f"{where}.{key}: no such field in {type_name}" for key in data if key not in fields]
    return errors + [e for key, value in data.items() if key in fields
                     for e in schema_errors(value, model.openapi_types[fields[key]],
                                            f"{where}.{key}")]


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_the_kubernetes_api_schema(doc: dict[str, Any]) -> None:
    name = model_name(doc)
    assert schema_errors(doc, name, doc["kind"]) == []
    ApiClient()._ApiClient__deserialize(doc, name)  # type: ignore[attr-defined]  # required fields


def test_the_schema_check_catches_mistakes() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": "80", "bogus": 1}]}}
    assert schema_errors(bad, "V1Service", "Service") == [
        "Service.spec.ports[0].bogus: no such field in V1ServicePort",
        "Service.spec.ports[0].port: expected int, got '80'"]
    with pytest.raises(ValueError, match="containers"):
        ApiClient()._ApiClient__deserialize({"containers": None}, "V1PodSpec")  # type: ignore[attr-defined]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_appliance_pods_drain_before_they_are_killed() -> None:
    pods = by_kind("StatefulSet")["appliance"]["spec"]["template"]["spec"]
    assert pods["terminationGracePeriodSeconds"] == DRAIN_S + UVICORN_CLOSE_S
    container = pods["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"  # 503 while draining
    assert "tcpSocket" in container["livenessProbe"]  # a draining pod stays alive
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_selectors_select_workloads_and_ingress_routes_to_services() -> None:
    workloads = {**by_kind("StatefulSet"), **by_kind("Deployment")}
    labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads.values()]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= pod_labels.items() for pod_labels in labels)

    pod_names = {f"{name}-{i}" for name, w in by_kind("StatefulSet").items()
                 for i in range(w["spec"]["replicas"])}
    for w in workloads.values():
        assert w["spec"]["selector"]["matchLabels"].items() <= \
            w["spec"]["template"]["metadata"]["labels"].items()
    for service in by_kind("Service").values():
        selector = service["spec"]["selector"]
        pod = selector.get("statefulset.kubernetes.io/pod-name")
        assert pod in pod_names if pod else selects(selector)
    pdb = by_kind("PodDisruptionBudget")["appliance"]["spec"]["selector"]["matchLabels"]
    assert selects(pdb)
    services = set(by_kind("Service"))
    for rule in by_kind("Ingress")["appliance"]["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] in services


def settings_names(env: dict[str, Any] | list[dict[str, Any]]) -> set[str]:
    names = set(env) if isinstance(env, dict) else {e["name"] for e in env}
    return {n for n in names if n.startswith("APPLIANCE_") or n in VENDOR_ENV}


def test_every_setting_named_in_deploy_exists() -> None:
    fields = set(Settings.__struct_fields__)
    named = set(by_kind("ConfigMap")["appliance"]["data"])
    for w in {**by_kind("StatefulSet"), **by_kind("Deployment")}.values():
        for container in w["spec"]["template"]["spec"]["containers"]:
            named |= settings_names(container.get("env", []))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    named |= settings_names(compose["services"]["appliance"]["environment"])
    example = (DEPLOY / "appliance.env.example").read_text()
    named |= settings_names({m: 1 for m in re.findall(r"^([A-Z_]+)=", example, re.M)})
    unknown = {n for n in named if n not in VENDOR_ENV
               and n.removeprefix("APPLIANCE_").lower() not in fields}
    assert named and not unknown


def test_compose_file_structure() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"appliance", "llm", "chroma", "postgres", "caddy"} <= set(services)
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert set(service.get("depends_on", {})) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in declared, (name, volume)
        for device in service.get("deploy", {}).get("resources", {}).get(
                "reservations", {}).get("devices", []):
            assert device["capabilities"] == ["gpu"]
    grace = services["appliance"]["stop_grace_period"]
    assert int(grace.removesuffix("s")) == DRAIN_S + UVICORN_CLOSE_S
    assert services["appliance"]["environment"]["APPLIANCE_LLM_URL"].startswith("http://llm:")
