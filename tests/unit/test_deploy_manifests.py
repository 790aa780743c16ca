"""The Kubernetes manifests of deploy/ (and cluster/kuberay-raycluster.yaml) are valid objects
that fit together: every Service finds its pods, every secret, volume and in-cluster URL they
name exists, every container has resources, the tracking server has probes and accepts the
Ray pods; and the image is built from requirements.lock.

No cluster and no network: Kubernetes' API schemas from kubernetes-validate (strict: unknown
fields are errors), the rest read from the files. The KubeRay resources' own structure is
checked in test_cluster_configs.py.
"""

from __future__ import annotations

import re
import shlex
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from deeprig.spec.loader import load_spec

from tests.conftest import REPO, module_from_file

DEPLOY = REPO / "deploy"
MANIFEST_FILES = [
    DEPLOY / "shared-storage.yaml",
    DEPLOY / "mlflow.yaml",
    DEPLOY / "rayjob.yaml",
    REPO / "cluster" / "kuberay-raycluster.yaml",
]
NAMESPACE = "deeprig"
K8S_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
SERVICE_HOST = re.compile(r"\b([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)")


def documents() -> list[tuple[str, dict]]:
    docs = []
    for path in MANIFEST_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.parent.name}/{path.name}", doc))
    return docs


def core_documents() -> list[tuple[str, dict]]:
    return [(f, d) for f, d in documents() if not d["apiVersion"].startswith("ray.io/")]


def find(kind: str, name: str) -> dict:
    return next(d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_specs(node, where: str = ""):
    """Every pod spec anywhere in a manifest (workloads, KubeRay groups, the job submitter)."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield where, node
        for key, value in node.items():
            yield from pod_specs(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from pod_specs(value, f"{where}[{i}]")


def all_pod_specs() -> list[tuple[str, dict]]:
    return [(f"{f}:{d['metadata']['name']}{w}", p) for f, d in documents() for w, p in pod_specs(d)]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def workloads() -> list[dict]:
    return [d for _, d in documents() if d["kind"] in {"Deployment", "StatefulSet"}]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def quantity(value) -> float:
    """A Kubernetes quantity ("250m", "2", "512Mi", "8Gi") as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(value)).groups()
    return float(number) * units[unit]


def mlflow_container() -> dict:
    pod = find("Deployment", "mlflow")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "mlflow")


def mlflow_args() -> dict[str, str | None]:
    args = {}
    for arg in mlflow_container()["args"]:
        key, sep, value = arg.partition("=")
        args[key] = value if sep else None
    return args


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), line.partition(" ")[2].strip())
        for line in lines
        if line and not line.startswith("#")
    ]


# --- Kubernetes' schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_core_manifests_pass_kubernetes_strict_schema(k8s_version):
    docs = core_documents()
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "StatefulSet", "Service", "PersistentVolumeClaim"} <= kinds
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{path}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")


@pytest.mark.parametrize(
    "kind,name,break_doc",
    [
        ("Deployment", "mlflow", lambda d: d["spec"].update(replica=1)),
        ("Deployment", "minio", lambda d: d["spec"].update(replicas="one")),
        (
            "StatefulSet",
            "mlflow-postgres",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePull="Always"),
        ),
        ("Service", "mlflow", lambda d: d["spec"]["ports"][0].update(port="http")),
        ("PersistentVolumeClaim", "deeprig-shared", lambda d: d["spec"].update(accessModes="RWX")),
    ],
    ids=["unknown-field", "wrong-type", "unknown-container-field", "named-port", "modes-not-list"],
)
def test_kubernetes_schema_rejects_a_broken_copy(kind, name, break_doc):
    broken = yaml.safe_load(yaml.safe_dump(find(kind, name)))
    kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)  # unbroken: passes
    break_doc(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_everything_is_in_one_namespace():
    # The in-cluster URLs (mlflow.deeprig.svc...) and secret references assume it.
    for path, doc in documents():
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{path}: {doc['metadata']['name']}"


# --- containers ------------------------------------------------------------------------------


def test_every_container_has_resource_requests_and_limits():
    checked = 0
    for where, pod in all_pod_specs():
        for container in containers(pod):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources.get(kind, {}).keys(), (
                    f"{where}: container {container['name']} has no {kind} for cpu and memory"
                )
            for resource, limit in resources["limits"].items():
                request = resources["requests"].get(resource, limit)
                assert quantity(request) <= quantity(limit), f"{where}: {resource}"
            checked += 1
    assert checked >= 9
    # KubeRay's autoscaler sidecar is a container too.
    raycluster = find("RayCluster", "deeprig")
    autoscaler = raycluster["spec"]["autoscalerOptions"]["resources"]
    assert {"cpu", "memory"} <= autoscaler["requests"].keys() & autoscaler["limits"].keys()


def test_every_image_is_pinned():
    for where, pod in all_pod_specs():
        for container in containers(pod):
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", f"{where}: {image} is not pinned"


def test_deeprigs_image_is_the_projects_version(deeprig_image):
    deeprig_images = {deeprig_image(gpu) for gpu in (False, True)}
    for where, pod in all_pod_specs():
        for container in containers(pod):
            image = container["image"]
            if image.rpartition(":")[0] == "ghcr.io/deeprig/deeprig":
                assert image in deeprig_images, f"{where}: {image}"


def test_mlflow_server_has_readiness_and_liveness_probes_on_its_health_endpoint():
    container = mlflow_container()
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health"  # MLflow's health endpoint, exempt from host checks
        assert check["port"] in port_names


def test_every_server_of_the_tracking_stack_has_readiness_and_liveness_probes():
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, (
                f"{workload['kind']}/{workload['metadata']['name']}: {container['name']}"
            )


# --- references between objects --------------------------------------------------------------


def test_every_workload_selector_matches_its_own_pod_template():
    for workload in workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


def test_every_service_selects_pods_of_the_manifests_on_ports_they_expose():
    services = [d for _, d in core_documents() if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} >= {"mlflow", "mlflow-postgres", "minio"}
    for service in services:
        selector = service["spec"]["selector"]
        pods = [
            w["spec"]["template"]
            for w in workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        ports = [p for pod in pods for c in pod["spec"]["containers"] for p in c.get("ports", [])]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            exposed = {p["name"] for p in ports} if isinstance(target, str) else set()
            exposed |= {p["containerPort"] for p in ports}
            assert target in exposed, f"Service {service['metadata']['name']}: port {target}"


def test_statefulset_names_a_headless_service_that_selects_it():
    statefulset = find("StatefulSet", "mlflow-postgres")
    service = find("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= (
        statefulset["spec"]["template"]["metadata"]["labels"].items()
    )


def test_every_volume_claim_is_defined_in_the_manifests():
    claims = {d["metadata"]["name"] for _, d in documents() if d["kind"] == "PersistentVolumeClaim"}
    used = 0
    for where, pod in all_pod_specs():
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
                used += 1
    assert used >= 4


def secrets_created_by_the_readme() -> set[tuple[str, str]]:
    created = set()
    for line in (DEPLOY / "README.md").read_text().splitlines():
        if "kubectl" in line and "create secret generic" in line:
            words = shlex.split(line)
            name = words[words.index("generic") + 1]
            assert "-n" in words and words[words.index("-n") + 1] == NAMESPACE, line
            for word in words:
                if word.startswith("--from-literal="):
                    created.add((name, word.removeprefix("--from-literal=").partition("=")[0]))
    return created


def test_every_secret_the_manifests_read_is_created_by_the_deploy_readme():
    read = set()
    for _, doc in documents():
        for _, pod in pod_specs(doc):
            for container in containers(pod):
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        read.add((ref["name"], ref["key"]))
        if doc["apiVersion"].startswith("ray.io/"):
            spec = doc["spec"].get("rayClusterSpec", doc["spec"])
            # KubeRay reads the token from the secret's `auth_token`.
            read.add((spec["authOptions"]["secretName"], "auth_token"))
    assert len(read) >= 5
    missing = read - secrets_created_by_the_readme()
    assert not missing, f"read by the manifests, not created by deploy/README.md: {missing}"


def test_every_in_cluster_url_names_a_service_and_port_of_the_manifests():
    services = {
        (d["metadata"]["name"], d["metadata"]["namespace"]): {p["port"] for p in d["spec"]["ports"]}
        for _, d in core_documents()
        if d["kind"] == "Service"
    }
    found = set()
    for _, doc in documents():
        for text in strings(doc):
            for name, namespace, port in SERVICE_HOST.findall(text):
                assert int(port) in services.get((name, namespace), set()), (
                    f"{name}.{namespace}:{port} is no Service port of the manifests"
                )
                found.add(name)
    assert found >= {"mlflow", "mlflow-postgres", "minio"}


# --- the tracking server and the Ray pods ----------------------------------------------------


def tracking_uris() -> list[tuple[str, str]]:
    uris = []
    for where, pod in all_pod_specs():
        for container in pod["containers"]:
            uri = env_of(container).get("MLFLOW_TRACKING_URI", {}).get("value")
            if uri:
                uris.append((f"{where}:{container['name']}", uri))
    return uris


def test_ray_pods_record_to_the_tracking_server_of_the_manifests():
    service = find("Service", "mlflow")
    expected = f"http://mlflow.{NAMESPACE}.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    uris = tracking_uris()
    assert len(uris) >= 4  # the Ray pods of the RayJob and of the RayCluster
    for where, uri in uris:
        assert uri == expected, where


def test_tracking_server_accepts_the_host_the_ray_pods_send():
    # MLflow rejects requests whose Host header it does not allow (DNS rebinding guard).
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = env_of(mlflow_container())["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    for where, uri in tracking_uris():
        assert is_allowed_host_header(allowed, urlparse(uri).netloc), where
    assert is_allowed_host_header(allowed, "localhost:5000")  # kubectl port-forward
    assert not is_allowed_host_header(allowed, "mlflow.example.com:5000")


def test_mlflow_server_stores_runs_in_postgres():
    assert mlflow_args()["--backend-store-uri"].startswith(
        "postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@"
    )


def test_mlflow_server_stores_artifacts_in_the_bucket_it_creates():
    args = mlflow_args()
    assert "--serve-artifacts" in args  # clients never need the S3 credentials
    destination = urlparse(args["--artifacts-destination"])
    assert destination.scheme == "s3"
    env = env_of(mlflow_container())
    assert urlparse(env["MLFLOW_S3_ENDPOINT_URL"]["value"]).hostname.startswith("minio.")
    # The init container creates that bucket: its script is Python that names it.
    pod = find("Deployment", "mlflow")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    script = init["args"][0]
    compile(script, "prepare-stores", "exec")
    assert f'BUCKET = "{destination.netloc}"' in script
    assert env_of(init)["MLFLOW_S3_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"]


def test_mlflow_server_lets_no_one_in_without_a_password():
    assert mlflow_args()["--app-name"] == "basic-auth"
    env = env_of(mlflow_container())
    for name, key in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "password"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-admin", "key": key}
    # The auth config is written by the init container into a memory volume both mount.
    pod = find("Deployment", "mlflow")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    config = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    assert env_of(init)["MLFLOW_AUTH_CONFIG_PATH"]["value"] == config
    volume = next(v for v in pod["volumes"] if v["name"] == "auth-config")
    assert volume["emptyDir"]["medium"] == "Memory"
    for container in (init, mlflow_container()):
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert config.startswith(mounts["auth-config"] + "/")
    script = init["args"][0]
    assert "default_permission = NO_PERMISSIONS" in script  # a new user sees nothing
    assert "mlflow-postgres.deeprig.svc.cluster.local:5432/{AUTH_DB}" in script
    assert "os.umask(0o077)" in script


def test_ray_pods_log_as_the_jobs_user_from_a_secret():
    pods = 0
    for where, pod in all_pod_specs():
        for container in pod["containers"]:
            env = env_of(container)
            if "MLFLOW_TRACKING_URI" not in env:
                continue
            pods += 1
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                ref = env[name]["valueFrom"]["secretKeyRef"]  # never a literal value
                assert ref["name"] == "mlflow-jobs-user", where
    assert pods >= 4


def test_rayjob_runs_the_example_job_from_the_image_on_its_own_cluster():
    rayjob = find("RayJob", "digits-cnn")
    entrypoint = rayjob["spec"]["entrypoint"]
    match = re.fullmatch(r"cd (\S+) && deeprig run (\S+\.yaml) --address auto", entrypoint)
    assert match, entrypoint
    workdir, job = match.groups()
    assert job == "jobs/digits_cnn.yaml"
    load_spec(REPO / job)  # a valid spec
    instructions = dockerfile_instructions()
    assert ("WORKDIR", workdir) in instructions
    assert ("COPY", "jobs ./jobs") in instructions
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True


# --- the image -------------------------------------------------------------------------------


def test_image_is_built_on_the_python_the_project_requires(project_metadata):
    base = next(args for op, args in dockerfile_instructions() if op == "FROM")
    python = re.fullmatch(r"python:(3\.\d+)-slim", base)[1]
    assert python == "3.11"
    assert re.search(rf">=\s*{re.escape(python)}\b", project_metadata["requires-python"])
    check = next(a for op, a in dockerfile_instructions() if op == "RUN" and "check_lock.py" in a)
    assert f"--python {python}" in check


def test_every_pip_install_of_the_image_is_constrained_by_the_lock():
    installs = [a for op, a in dockerfile_instructions() if op == "RUN" and "pip install" in a]
    assert len(installs) == 2
    for run in installs:
        assert "pip install -c requirements.lock" in run, run
    check = next(a for op, a in dockerfile_instructions() if op == "RUN" and "check_lock.py" in a)
    assert "requirements.lock deploy/requirements-deploy.txt" in check
    assert {"ray", "torch", "mlflow"} <= set(check.partition("--require")[2].split())


def test_image_installs_torchs_cpu_wheel_unless_told_otherwise(lock_pins):
    instructions = dockerfile_instructions()
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in instructions
    installs = [a for op, a in instructions if op == "RUN" and "pip install" in a]
    assert any('--extra-index-url "${TORCH_INDEX_URL}"' in run for run in installs)
    # The lock pins torch without a local label, so +cpu and CUDA builds both satisfy it.
    assert "+" not in lock_pins["torch"]


def test_build_context_filter_lets_in_exactly_what_the_image_copies():
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for op, args in dockerfile_instructions():
        if op == "COPY":
            copied |= {source.rstrip("/") for source in args.split()[:-1]}
    assert copied == allowed
    assert all((REPO / source).exists() for source in copied)
    assert "jobs/data" in patterns  # generated data stays out of the image


def test_deploy_requirements_are_exact_pins_that_leave_the_lock_alone(lock_pins):
    pins = lock_pins
    lines = (DEPLOY / "requirements-deploy.txt").read_text().splitlines()
    requirements = [line for line in lines if line.strip() and not line.startswith("#")]
    assert requirements
    for line in requirements:
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\d[\w.]*)", line.strip())
        assert match, f"not an exact pin: {line}"
        name, version = match.groups()
        assert pins.get(name.lower(), version) == version, f"{name} differs from the lock"


def load_check_lock():
    return module_from_file("check_lock", DEPLOY / "check_lock.py")


def matching_lock(folder):
    """A lock that pins the installed PyYAML (and a package not installed, not required)."""
    from importlib.metadata import version

    matching = folder / "matching.lock"
    matching.write_text(f"# header\nPyYAML=={version('PyYAML')}\nnot-installed-pkg==1.0\n")
    return matching


def test_lock_check_passes_on_the_installed_versions(tmp_path):
    check_lock = load_check_lock()
    assert check_lock.main([str(matching_lock(tmp_path)), "--require", "pyyaml"]) == 0


def test_lock_check_reports_drift(tmp_path, capsys):
    check_lock = load_check_lock()
    drifted = tmp_path / "drifted.lock"
    drifted.write_text("PyYAML==0.0.1\n")
    assert check_lock.main([str(drifted), "--require", "not-installed-pkg"]) == 1
    err = capsys.readouterr().err
    assert "PyYAML: drifted.lock pins 0.0.1" in err
    assert "not-installed-pkg: required but not installed" in err
    assert check_lock.main([str(matching_lock(tmp_path)), "--python", "2.7"]) == 1


def test_versions_named_in_deploy_files_are_the_locks(lock_pins):
    pins = lock_pins
    expected = {"ray": pins["ray"], "torch": pins["torch"], "mlflow": pins["mlflow"]}
    named = 0
    for path in sorted(p for p in DEPLOY.iterdir() if p.is_file()):
        text = path.read_text()
        for package, version in re.findall(r"\b(Ray|torch|MLflow)[ =]=?\s*(\d+\.\d+\.\d+)", text):
            assert version == expected[package.lower()], f"{path.name}: {package} {version}"
            named += 1
        for version in re.findall(r'rayVersion: "([^"]+)"', text):
            assert version == pins["ray"], path.name
            named += 1
    assert named >= 1
