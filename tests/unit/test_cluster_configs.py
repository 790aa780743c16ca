"""The Ray cluster configs (cluster/, and the KubeRay RayJob of deploy/) are what `ray up` and
KubeRay accept, and they agree with requirements.lock: one image, one Ray; token auth on; runs
recorded on a tracking server; checkpoints on shared storage.

No cluster and no network: Ray's own cluster-config schema and the functions `ray up` and
Ray's KubeRay autoscaler run on a config, Kubernetes' schemas from kubernetes-validate.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deeprig.cluster.resources import ClusterResources, budget_workers
from deeprig.spec.loader import load_spec

from tests.conftest import JOBS, REPO

CLUSTER = REPO / "cluster"
RAY_UP_CONFIGS = ["aws.yaml", "gcp.yaml", "onprem.yaml"]
DOCKER_CONFIGS = ["aws.yaml", "gcp.yaml"]  # the ones that run the image on every node
KUBERAY_FILES = [CLUSTER / "kuberay-raycluster.yaml", REPO / "deploy" / "rayjob.yaml"]
SHARED_MOUNT = "/mnt/shared"
TOKEN_FILE = "~/.ray/auth_token"  # where Ray reads the cluster token by default
SHARED_STATE_ENV = ("DEEPRIG_STORAGE", "DEEPRIG_HOME")  # deeprig's checkpoints, its folder
# The oldest Kubernetes these manifests are meant for, and the newest the package knows.
K8S_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


# --- what the configs are checked against ----------------------------------------------------


def is_tracking_server(uri: str | None) -> bool:
    """An MLflow server every node can reach: not a local store, not this host's loopback."""
    parsed = urlparse(uri or "")
    local_hosts = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}
    return parsed.scheme in {"http", "https"} and parsed.hostname not in local_hosts


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ray_up_config(name: str) -> dict:
    return load(CLUSTER / name)


def prepared_and_validated(raw: dict) -> dict:
    """What `ray up` does with a config before it touches a cloud: fill in the provider's
    defaults, then validate against Ray's schema (ray/autoscaler/ray-schema.json) and rules."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def ray_schema() -> dict:
    import json

    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def docker_env(config: dict) -> dict[str, str]:
    """The environment `docker run` gives every node's container (docker.run_options)."""
    env = {}
    for option in config["docker"].get("run_options", []):
        words = shlex.split(option)
        if words[0] in {"--env", "-e"}:
            key, _, value = words[1].partition("=")
            env[key] = value
    return env


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def ray_start_commands(config: dict) -> list[str]:
    return [
        command
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for command in config[key]
        if "ray start" in command
    ]


def ray_process_env(name: str) -> dict[str, str]:
    """The environment the Ray processes of a `ray up` config start with."""
    config = ray_up_config(name)
    if name in DOCKER_CONFIGS:
        return docker_env(config)
    # On-prem: every `ray start` sources cluster/onprem.env (synced to ~/deeprig/cluster).
    for command in ray_start_commands(config):
        assert "source ~/deeprig/cluster/onprem.env" in command, command
    assert config["file_mounts"]["~/deeprig/cluster"] == "./cluster"
    return env_file(CLUSTER / "onprem.env")


def all_commands(config: dict) -> list[str]:
    keys = [key for key in config if key.endswith("_commands")]
    commands = [command for key in keys for command in config[key]]
    for node_type in config.get("available_node_types", {}).values():
        for key in ("initialization_commands", "worker_setup_commands"):
            commands += node_type.get(key, [])
    return commands


def min_size_resources(node_types: dict, head_type: str) -> ClusterResources:
    """The cluster with its head and each node type's minimum of workers."""
    nodes = [node_types[head_type]["resources"]]
    for name, node_type in node_types.items():
        if name != head_type:
            nodes += [node_type["resources"]] * node_type.get("min_workers", 0)
    return ClusterResources(
        cpus=float(sum(n.get("CPU", 0) for n in nodes)),
        gpus=float(sum(n.get("GPU", 0) for n in nodes)),
        max_node_cpus=float(max(n.get("CPU", 0) for n in nodes)),
        nodes=len(nodes),
        where="the cluster at its minimum size",
    )


# --- ray up: AWS, GCP, on-prem ---------------------------------------------------------------


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_config_passes_rays_cluster_schema(name):
    raw = ray_up_config(name)
    jsonschema.validate(raw, ray_schema())  # as written: no key that `ray up` would drop
    config = prepared_and_validated(raw)  # as `ray up` sees it, merged with Ray's defaults
    if "available_node_types" in raw:
        assert config["available_node_types"].keys() == raw["available_node_types"].keys()
        assert config["head_node_type"] == raw["head_node_type"]
    else:  # the local provider: one node type per listed host
        assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]


@pytest.mark.parametrize(
    "break_config",
    [
        pytest.param(lambda c: c.update(max_worker=3), id="unknown-top-level-key"),
        pytest.param(
            lambda c: c["available_node_types"]["ray.worker.cpu"].update(min_worker=1),
            id="unknown-node-type-key",
        ),
        pytest.param(lambda c: c["docker"].update(imagee="x"), id="unknown-docker-key"),
        pytest.param(
            lambda c: c["available_node_types"]["ray.worker.cpu"].update(resources={"CPU": -1}),
            id="negative-resource",
        ),
        pytest.param(lambda c: c.update(head_node_type="ray.headd"), id="unknown-head-type"),
    ],
)
def test_ray_up_validation_rejects_a_broken_copy_of_the_aws_config(break_config):
    broken = ray_up_config("aws.yaml")
    prepared_and_validated(broken)  # the unbroken one passes
    break_config(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        prepared_and_validated(broken)


@pytest.mark.parametrize("name", DOCKER_CONFIGS)
def test_every_node_runs_the_image_built_from_the_lock(name, deeprig_image):
    config = ray_up_config(name)
    assert config["docker"]["image"] == deeprig_image()
    assert config["docker"]["pull_before_run"] is True
    for node_name, node_type in config["available_node_types"].items():
        image = node_type.get("docker", {}).get("worker_image", config["docker"]["image"])
        has_gpu = node_type["resources"].get("GPU", 0) > 0
        assert image == deeprig_image(gpu=has_gpu), f"{node_name} runs {image}"


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_cluster_requires_the_token_that_ray_up_copies_to_every_node(name):
    assert ray_process_env(name)["RAY_AUTH_MODE"] == "token"
    assert ray_up_config(name)["file_mounts"][TOKEN_FILE] == TOKEN_FILE


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_cluster_records_runs_on_a_tracking_server(name):
    uri = ray_process_env(name).get("MLFLOW_TRACKING_URI")
    assert is_tracking_server(uri), f"{name}: MLFLOW_TRACKING_URI={uri!r} is not a server URI"


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_cluster_keeps_checkpoints_on_storage_every_node_mounts(name):
    config = ray_up_config(name)
    env = ray_process_env(name)
    for variable in SHARED_STATE_ENV:  # checkpoints, and deeprig's folder
        path = env.get(variable, "")
        assert path.startswith(SHARED_MOUNT + "/"), f"{variable}={path!r} is node-local"
    if name in DOCKER_CONFIGS:
        # Mounted on the host before the container starts, checked, and passed through.
        mounts = [c for c in config["initialization_commands"] if re.search(r"\bmount -t nfs", c)]
        assert mounts and all(c.split()[-1] == SHARED_MOUNT for c in mounts)
        assert f"mountpoint {SHARED_MOUNT}" in config["initialization_commands"]
        assert f"--volume {SHARED_MOUNT}:{SHARED_MOUNT}" in config["docker"]["run_options"]
    else:  # the hosts mount it themselves; setup stops where it is missing
        assert any(f"mountpoint -q {SHARED_MOUNT} ||" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_nodes_install_nothing_but_the_lock(name):
    # Merged with Ray's defaults, whose setup commands would pip-install another Ray.
    commands = all_commands(prepared_and_validated(ray_up_config(name)))
    installs = [c for c in commands if "pip install" in c]
    if name in DOCKER_CONFIGS:
        assert installs == [], "the image has everything; nodes install nothing"
    else:
        assert installs, "on-prem hosts install deeprig from the lock"
        for command in installs:
            assert "-c requirements.lock" in command and "-e ." in command, command
        assert any(c.startswith("test -x ~/.venvs/deeprig/bin/python ||") for c in commands)
        assert all("python3.11 -m venv" in c for c in commands if "-m venv" in c)


@pytest.mark.parametrize("name", DOCKER_CONFIGS)
def test_ray_up_cluster_at_its_minimum_size_fits_the_example_job(name):
    # deeprig checks a job against the resources present when it is submitted.
    config = ray_up_config(name)
    resources = min_size_resources(config["available_node_types"], config["head_node_type"])
    budget = budget_workers(load_spec(JOBS / "digits_cnn.yaml").scaling, resources)
    assert budget.cpus_per_worker >= 1


def test_onprem_environment_file_is_plain_key_value_lines():
    # `set -a; source` exports it, and the tests read it: no quoting, no shell code.
    for line in (CLUSTER / "onprem.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^\s'\"$`;&|]+", line), line


# --- KubeRay: cluster/kuberay-raycluster.yaml and deploy/rayjob.yaml -------------------------
#
# kubernetes-validate has no schema for KubeRay's custom resources. Their structure is checked
# against the closed schema below, written from KubeRay's ray.io/v1 Go types (v1.6), and each
# embedded pod template against Kubernetes' own PodTemplateSpec schema.


def _closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_STR, _BOOL, _OBJ, _LIST = (
    {"type": "string"},
    {"type": "boolean"},
    {"type": "object"},
    {"type": "array"},
)
_COUNT = {"type": "integer", "minimum": 0}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_GROUP = {"rayStartParams": _STR_MAP, "template": _OBJ, "resources": _STR_MAP, "labels": _STR_MAP}
RAY_CLUSTER_SPEC_SCHEMA = _closed(
    {
        "rayVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "authOptions": _closed(
            {
                "mode": {"enum": ["disabled", "token"]},
                "secretName": _STR,
                "enableK8sTokenAuth": _BOOL,
            }
        ),
        "enableInTreeAutoscaling": _BOOL,
        "autoscalerOptions": _closed(
            {
                "resources": _OBJ,
                "image": _STR,
                "imagePullPolicy": _STR,
                "securityContext": _OBJ,
                "idleTimeoutSeconds": _COUNT,
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                "version": {"enum": ["v1", "v2"]},
                "env": _LIST,
                "envFrom": _LIST,
                "volumeMounts": _LIST,
                "command": _LIST,
                "args": _LIST,
            }
        ),
        "headServiceAnnotations": _STR_MAP,
        "suspend": _BOOL,
        "managedBy": _STR,
        "upgradeStrategy": _OBJ,
        "gcsFaultToleranceOptions": _OBJ,
        "networkPolicy": _OBJ,
        "tlsOptions": _OBJ,
        "historyServerOptions": _OBJ,
        "headGroupSpec": _closed(
            {
                **_GROUP,
                "serviceType": _STR,
                "headService": _OBJ,
                "enableIngress": _BOOL,
                "ingressOptions": _OBJ,
            },
            required=("template",),
        ),
        "workerGroupSpecs": {
            "type": "array",
            "items": _closed(
                {
                    **_GROUP,
                    "groupName": _STR,
                    "replicas": _COUNT,
                    "minReplicas": _COUNT,
                    "maxReplicas": _COUNT,
                    "numOfHosts": {"type": "integer", "minimum": 1},
                    "idleTimeoutSeconds": _COUNT,
                    "priority": {"type": "integer"},
                    "scaleStrategy": _OBJ,
                    "suspend": _BOOL,
                },
                # The CRD defaults min/maxReplicas; Ray's autoscaler reads them (required here).
                required=("groupName", "template", "minReplicas", "maxReplicas"),
            ),
        },
    },
    required=("headGroupSpec", "rayVersion"),
)
_METADATA = _closed(
    {"name": _STR, "namespace": _STR, "labels": _STR_MAP, "annotations": _STR_MAP},
    required=("name", "namespace"),
)
KUBERAY_SCHEMAS = {
    "RayCluster": _closed(
        {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": "RayCluster"},
            "metadata": _METADATA,
            "spec": RAY_CLUSTER_SPEC_SCHEMA,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    ),
    "RayJob": _closed(
        {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": "RayJob"},
            "metadata": _METADATA,
            "spec": _closed(
                {
                    "entrypoint": {"type": "string", "minLength": 1},
                    "runtimeEnvYAML": _STR,
                    "jobId": _STR,
                    "submissionMode": {
                        "enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]
                    },
                    "entrypointResources": _STR,
                    "entrypointNumCpus": {"type": "number", "minimum": 0},
                    "entrypointNumGpus": {"type": "number", "minimum": 0},
                    "ttlSecondsAfterFinished": _COUNT,
                    "shutdownAfterJobFinishes": _BOOL,
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                    "backoffLimit": _COUNT,
                    "suspend": _BOOL,
                    "managedBy": _STR,
                    "deletionStrategy": _OBJ,
                    "metadata": _STR_MAP,
                    "clusterSelector": _STR_MAP,
                    "submitterConfig": _closed({"backoffLimit": _COUNT}),
                    "submitterPodTemplate": _OBJ,
                    "rayClusterSpec": RAY_CLUSTER_SPEC_SCHEMA,
                },
                required=("entrypoint", "rayClusterSpec"),
            ),
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    ),
}


def cluster_spec(resource: dict) -> dict:
    return resource["spec"]["rayClusterSpec"] if resource["kind"] == "RayJob" else resource["spec"]


def pod_templates(resource: dict) -> dict[str, dict]:
    """Every pod template a KubeRay resource embeds, by where it is."""
    spec = cluster_spec(resource)
    templates = {"headGroupSpec": spec["headGroupSpec"]["template"]}
    for group in spec.get("workerGroupSpecs", []):
        templates[f"workerGroupSpecs[{group['groupName']}]"] = group["template"]
    if "submitterPodTemplate" in resource["spec"]:
        templates["submitterPodTemplate"] = resource["spec"]["submitterPodTemplate"]
    return templates


def ray_containers(resource: dict) -> list[dict]:
    """The Ray container of each group (KubeRay: the first container of the pod)."""
    spec = cluster_spec(resource)
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [group["template"]["spec"]["containers"][0] for group in groups]


def derived_autoscaling_config(resource: dict) -> dict:
    """The config Ray's autoscaler derives from the CR on the cluster (and validates with
    Ray's cluster-config schema)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    return _derive_autoscaling_config_from_ray_cr(
        {"metadata": resource["metadata"], "spec": cluster_spec(resource)}
    )


def as_pod_template(template: dict, name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name, "namespace": "deeprig"},
        "template": template,
    }


@pytest.fixture(params=KUBERAY_FILES, ids=lambda p: p.name)
def kuberay_resource(request) -> dict:
    return load(request.param)


def test_kuberay_resource_has_only_fields_of_kuberays_crd(kuberay_resource):
    jsonschema.validate(kuberay_resource, KUBERAY_SCHEMAS[kuberay_resource["kind"]])


@pytest.mark.parametrize(
    "break_resource",
    [
        pytest.param(lambda r: cluster_spec(r).update(rayversion="2.60.0"), id="misspelt-field"),
        pytest.param(
            lambda r: cluster_spec(r)["workerGroupSpecs"][0].update(replica=2), id="group-field"
        ),
        pytest.param(
            lambda r: cluster_spec(r)["authOptions"].update(mode="password"), id="auth-mode"
        ),
        pytest.param(lambda r: cluster_spec(r).pop("headGroupSpec"), id="no-head"),
    ],
)
def test_kuberay_schema_rejects_a_broken_copy(kuberay_resource, break_resource):
    broken = copy.deepcopy(kuberay_resource)
    break_resource(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KUBERAY_SCHEMAS[broken["kind"]])


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_kuberay_pod_templates_pass_kubernetes_pod_template_schema(kuberay_resource, k8s_version):
    templates = pod_templates(kuberay_resource)
    assert "headGroupSpec" in templates and len(templates) >= 2
    for where, template in templates.items():
        name = re.sub(r"[^a-z0-9]+", "-", where.lower()).strip("-")
        kubernetes_validate.validate(as_pod_template(template, name), k8s_version, strict=True)


def test_kubernetes_schema_rejects_a_pod_template_with_a_misspelt_container_field(
    kuberay_resource,
):
    template = copy.deepcopy(pod_templates(kuberay_resource)["headGroupSpec"])
    template["spec"]["containers"][0]["resource"] = template["spec"]["containers"][0].pop(
        "resources"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            as_pod_template(template, "head"), K8S_VERSIONS[0], strict=True
        )


def test_kuberay_ray_version_is_the_locks(kuberay_resource, lock_pins):
    assert cluster_spec(kuberay_resource)["rayVersion"] == lock_pins["ray"]


def test_kuberay_pods_run_the_image_built_from_the_lock(kuberay_resource, deeprig_image):
    for where, template in pod_templates(kuberay_resource).items():
        for container in template["spec"]["containers"]:
            has_gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
            assert container["image"] == deeprig_image(gpu=has_gpu), where


def test_kuberay_cluster_turns_token_auth_on(kuberay_resource):
    auth = cluster_spec(kuberay_resource)["authOptions"]
    assert auth["mode"] == "token"
    assert auth["secretName"] == "ray-auth"  # created by deploy/README.md
    for container in ray_containers(kuberay_resource):
        assert all(e["name"] != "RAY_AUTH_MODE" for e in container.get("env", [])), (
            "KubeRay sets RAY_AUTH_MODE from authOptions; a container must not override it"
        )


def test_kuberay_ray_containers_record_runs_on_a_tracking_server(kuberay_resource):
    for container in ray_containers(kuberay_resource):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert is_tracking_server(env.get("MLFLOW_TRACKING_URI")), container["name"]


def test_kuberay_ray_containers_keep_checkpoints_on_a_shared_volume(kuberay_resource):
    pvc = load(REPO / "deploy" / "shared-storage.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = cluster_spec(kuberay_resource)
    for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        for variable in SHARED_STATE_ENV:
            path = env[variable]
            mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
            assert mounts, f"{variable}={path} is not on a mounted volume"
            volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
            assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_rays_autoscaler_reads_the_kuberay_groups_as_intended(kuberay_resource):
    config = derived_autoscaling_config(kuberay_resource)  # raises if Ray's schema rejects it
    node_types = config["available_node_types"]
    assert node_types["headgroup"]["resources"]["CPU"] == 0  # nothing scheduled on the head
    spec = cluster_spec(kuberay_resource)
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        resources = node_types[group["groupName"]]["resources"]
        assert resources["CPU"] == int(limits["cpu"])
        assert resources.get("GPU", 0) == int(limits.get("nvidia.com/gpu", 0))


def test_kuberay_cluster_at_its_minimum_size_fits_the_job_it_is_for(kuberay_resource):
    if kuberay_resource["kind"] == "RayJob":
        job = re.search(r"deeprig run (\S+\.yaml)", kuberay_resource["spec"]["entrypoint"])[1]
    else:
        job = "jobs/digits_cnn.yaml"  # the example of cluster/README.md
    config = derived_autoscaling_config(kuberay_resource)
    resources = min_size_resources(config["available_node_types"], config["head_node_type"])
    budget = budget_workers(load_spec(REPO / job).scaling, resources)
    assert budget.cpus_per_worker >= 1


# --- the versions the files name -------------------------------------------------------------


def test_versions_named_in_cluster_files_are_the_locks(lock_pins, project_metadata):
    # Comments and docs say "Ray 2.60.0", "torch 2.13.0", "Python 3.11": after a lock bump,
    # a stale one fails here.
    pins = lock_pins
    expected = {"ray": pins["ray"], "torch": pins["torch"]}
    python = re.search(r">=\s*(3\.\d+)", project_metadata["requires-python"])[1]
    named = 0
    for path in sorted(CLUSTER.iterdir()):
        text = path.read_text()
        for package, version in re.findall(r"\b(Ray|torch)[ =]=?\s*(\d+\.\d+\.\d+)", text):
            assert version == expected[package.lower()], f"{path.name}: {package} {version}"
            named += 1
        for version in re.findall(r"\bPython (3\.\d+)", text) + re.findall(r"python(3\.\d+)", text):
            assert version == python, f"{path.name}: Python {version}"
    assert named >= 3
