"""The Terraform modules without a broker or a cluster: `terraform test` of the cluster
module (manifests) and of the kafka module (plans against a mock provider), and every
manifest the cluster module renders validated against the operators' own CRD schemas.

The CRDs come from the operators' artifacts on Maven Central (infra/terraform/crds/crds.sh):
Strimzi 1.2.0's, generated from io.strimzi:api by io.strimzi:crd-generator exactly as its
release build does, and the Flink Kubernetes Operator's FlinkDeployment CRD from
flink-kubernetes-operator-api 1.10.0, the newest version served there. Validation is strict
like `kubectl apply --validate=strict`: a field the schema does not declare is an error
(the API server would silently drop it).

1.10.0 predates Flink 2.x: its flinkVersion enum stops at v1_20, while the module asks for
v2_2 (operator >= 1.13). The FlinkDeployment test therefore requires that this enum is the
one and only disagreement, and that the manifest validates cleanly once flinkVersion is
set to a value 1.10.0 knows.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.terraform import (
    TERRAFORM_DIR,
    TOOLS_TIMEOUT_S,
    TerraformTools,
    copy_config,
    terraform_tools,
)

# the first run on a machine without terraform may build OpenTofu (~8 min)
pytestmark = pytest.mark.timeout(TOOLS_TIMEOUT_S + 300)

CRDS_SH = TERRAFORM_DIR / "crds" / "crds.sh"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class Workspace:
    tools: TerraformTools
    root: Path  # a copy of infra/terraform

    def run(self, module: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = self.tools.env()
        env["TF_DATA_DIR"] = str(self.root / ".data" / module.replace("/", "_"))
        return self.tools.run(*args, cwd=self.root / module, env=env)

    def must(self, module: str, *args: str) -> str:
        done = self.run(module, *args)
        if done.returncode != 0:
            pytest.fail(
                f"terraform {' '.join(args)} in {module} failed (exit {done.returncode}):\n"
                f"{done.stdout[-6000:]}\n{done.stderr[-4000:]}",
                pytrace=False,
            )
        return done.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    yield Workspace(terraform_tools(), copy_config(tmp_path_factory.mktemp("tf")))


@pytest.fixture(scope="module")
def manifests(workspace: Workspace) -> list[dict[str, Any]]:
    """What modules/cluster/examples/basic renders (apply: outputs only, no provider)."""
    example = "modules/cluster/examples/basic"
    workspace.must(example, "init", "-input=false", "-no-color")
    workspace.must(example, "apply", "-auto-approve", "-input=false", "-no-color")
    rendered: list[dict[str, Any]] = json.loads(
        workspace.must(example, "output", "-json", "manifests")
    )
    return rendered


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, from the operators' Maven artifacts."""
    done = subprocess.run([str(CRDS_SH)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(
            f"infra/terraform/crds/crds.sh could not get the operators' CRDs "
            f"(exit {done.returncode}):\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    folder = Path(done.stdout.strip().splitlines()[-1])
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*/*.y*ml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    expected = {
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("kafka.strimzi.io/v1", "KafkaUser"),
        ("flink.apache.org/v1beta1", "FlinkDeployment"),
    }
    assert expected <= set(schemas), f"CRDs found: {sorted(schemas)}"
    return schemas


def strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever the CRD declares the fields of an
    object and does not ask to keep unknown ones (what --validate=strict enforces)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items() if key != "properties"}
    if "properties" in schema:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    return out


# every object has these, whether or not its CRD spells them out (fabric8's generator,
# used by the Flink operator, leaves them out; the API server validates metadata itself)
OBJECT_FIELDS = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


def schema_errors(manifest: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    root = {**schema, "properties": {**OBJECT_FIELDS, **schema.get("properties", {})}}
    validator = jsonschema.Draft7Validator(strict(root))
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message} "
        f"[{error.validator}]"
        for error in validator.iter_errors(manifest)
    )


def test_cluster_module_terraform_test(workspace: Workspace) -> None:
    workspace.must("modules/cluster", "init", "-input=false", "-no-color")
    out = workspace.must("modules/cluster", "test", "-no-color")
    assert re.search(r"Success! \d+ passed, 0 failed", out), out


def test_kafka_module_validation_with_mock_provider(workspace: Workspace) -> None:
    workspace.must("modules/kafka", "init", "-input=false", "-no-color")
    out = workspace.must("modules/kafka", "test", "-no-color")
    assert re.search(r"Success! \d+ passed, 0 failed", out), out
    assert "zero_partitions_refused" in out


def test_strimzi_manifests_match_strimzi_crds(
    manifests: list[dict[str, Any]], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    strimzi = [m for m in manifests if m["apiVersion"].startswith("kafka.strimzi.io/")]
    assert [m["kind"] for m in strimzi] == ["Kafka", "KafkaNodePool"] + ["KafkaTopic"] * 5 + [
        "KafkaUser"
    ] * 4
    for manifest in strimzi:
        name = manifest["metadata"]["name"]
        assert DNS_SUBDOMAIN.match(name), name
        schema = crd_schemas[(manifest["apiVersion"], manifest["kind"])]
        assert schema_errors(manifest, schema) == [], f"{manifest['kind']} {name}"


def test_flink_deployment_matches_the_operator_crd(
    manifests: list[dict[str, Any]], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    (deployment,) = [m for m in manifests if m["kind"] == "FlinkDeployment"]
    schema = crd_schemas[(deployment["apiVersion"], "FlinkDeployment")]
    assert deployment["spec"]["flinkVersion"] == "v2_2"
    errors = schema_errors(deployment, schema)
    assert len(errors) == 1 and errors[0].startswith("spec.flinkVersion: 'v2_2' is not one of")
    assert errors[0].endswith("[enum]"), errors
    known = copy.deepcopy(deployment)
    known["spec"]["flinkVersion"] = "v1_20"
    assert schema_errors(known, schema) == []
    assert DNS_SUBDOMAIN.match(deployment["metadata"]["name"])


def test_validation_catches_unknown_fields_and_wrong_types(
    manifests: list[dict[str, Any]], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """The check above can fail: a misspelt field or a wrong type is reported."""
    kafka = copy.deepcopy(manifests[0])
    kafka["spec"]["kafka"]["listners"] = kafka["spec"]["kafka"].pop("listeners")
    errors = schema_errors(kafka, crd_schemas[("kafka.strimzi.io/v1", "Kafka")])
    assert any("'listeners' is a required property" in e for e in errors), errors
    assert any("'listners' was unexpected" in e for e in errors), errors

    topic = copy.deepcopy(manifests[2])
    topic["spec"]["partitions"] = "6"
    errors = schema_errors(topic, crd_schemas[("kafka.strimzi.io/v1", "KafkaTopic")])
    assert errors == ["spec.partitions: '6' is not of type 'integer' [type]"], errors

    user = copy.deepcopy(manifests[8])
    user["spec"]["authorization"]["acls"][0]["resource"]["patternType"] = "prefixed"
    errors = schema_errors(user, crd_schemas[("kafka.strimzi.io/v1", "KafkaUser")])
    assert len(errors) == 1 and "is not one of ['literal', 'prefix']" in errors[0], errors

    deployment = copy.deepcopy(manifests[-1])
    deployment["spec"]["flinkVersion"] = "v1_20"
    deployment["spec"]["job"]["upgradeMode"] = "snapshot"
    errors = schema_errors(deployment, crd_schemas[("flink.apache.org/v1beta1", "FlinkDeployment")])
    assert len(errors) == 1 and errors[0].startswith("spec.job.upgradeMode"), errors


def test_users_grant_the_same_matrix_as_the_kafka_module(
    workspace: Workspace, manifests: list[dict[str, Any]]
) -> None:
    """KafkaUser ACLs, flattened, equal the acl-matrix module's entries."""
    from_users = set()
    kinds = {"topic": "Topic", "group": "Group", "transactionalId": "TransactionalID"}
    patterns = {"literal": "Literal", "prefix": "Prefixed"}
    for user in (m for m in manifests if m["kind"] == "KafkaUser"):
        for acl in user["spec"]["authorization"]["acls"]:
            assert acl["type"] == "allow" and acl["host"] == "*"
            resource = acl["resource"]
            for operation in acl["operations"]:
                from_users.add(
                    (
                        f"User:{user['metadata']['name']}",
                        kinds[resource["type"]],
                        patterns[resource["patternType"]],
                        resource["name"],
                        operation,
                    )
                )
    assert from_users == {tuple(entry) for entry in _matrix(workspace)}
    assert len(from_users) == 36


def _matrix(workspace: Workspace) -> list[list[str]]:
    """The acl-matrix module's entries, through a throw-away root that calls it."""
    root = workspace.root / "matrix-root"
    root.mkdir(exist_ok=True)
    (root / "main.tf").write_text(
        """
module "matrix" {
  source = "../modules/acl-matrix"
  topics = {
    updates = "fl.updates", control = "fl.control", models = "fl.models", dlq = "fl.dlq"
  }
  usernames = {
    job = "job", device = "device", owner = "owner", auditor = "auditor"
  }
  job_group                   = "fedstream-aggregator"
  job_transactional_id_prefix = "fedstream-aggregator"
  device_group_prefix         = "fedstream-device"
  auditor_group_prefix        = "fedstream-auditor"
}
output "acls" {
  value = [
    for a in values(module.matrix.acls) :
    [a.principal, a.resource_type, a.pattern_type, a.resource_name, a.operation]
  ]
}
"""
    )
    workspace.must("matrix-root", "init", "-input=false", "-no-color")
    workspace.must("matrix-root", "apply", "-auto-approve", "-input=false", "-no-color")
    entries: list[list[str]] = json.loads(workspace.must("matrix-root", "output", "-json", "acls"))
    return entries


def test_terraform_files_are_formatted(workspace: Workspace) -> None:
    done = workspace.run(".", "fmt", "-check", "-recursive", "-diff", "-no-color")
    assert done.returncode == 0, f"run `terraform fmt -recursive infra/terraform`:\n{done.stdout}"
