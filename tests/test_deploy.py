"""The deployment files: parsed and checked for the parts an operator relies on."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from idp.settings import Settings, SettingsError

from .conftest import free_port

DEPLOY = Path(__file__).parent.parent / "deploy"
KUBERNETES_VERSION = "1.37.0"
CHECKOV_VERSION = "3.3.30"


def manifests() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and "kind" in document and document["kind"] != "Kustomization":
                found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\w+))?", text, flags=re.MULTILINE)
    assert len(stages) >= 2 and stages[0] == "build"
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER\s+(?!0\b|root\b)\S+", final, flags=re.MULTILINE), "the final stage runs as non-root"
    assert "COPY --from=build" in final
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", final, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["idp"\]', final, flags=re.MULTILINE)


def test_compose_runs_idp_with_postgresql_redis_and_a_mail_catcher():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"idp", "postgres", "redis", "mail"} <= services.keys()
    environment = services["idp"]["environment"]
    assert environment["IDP_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert environment["IDP_REDIS_URL"].startswith("redis://redis")
    assert environment["IDP_SMTP_HOST"] == "mail"
    assert services["idp"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_deployment_has_two_replicas_probes_secrets_and_a_read_only_keys_volume():
    found = manifests()
    deployment = found["Deployment/idp"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"idp-settings"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "keys")
    assert mount["readOnly"] is True
    keys_volume = next(v for v in pod["volumes"] if v["name"] == "keys")
    assert keys_volume["secret"]["secretName"] == "idp-keys"
    assert {"IDP_KEYS_DIR": mount["mountPath"]} == {e["name"]: e["value"] for e in container["env"]}


def test_the_read_only_container_has_a_writable_tmp_for_its_workers():
    """With ``--workers`` above 1 the metrics files and gunicorn's heartbeats go to the temporary
    directory, which a read-only root file system would refuse: the server would not start."""
    found = manifests()
    pod = found["Deployment/idp"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert int(container["args"][container["args"].index("--workers") + 1]) > 1
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert not mount.get("readOnly")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mount["name"])


def _shipped_dotenv(tmp_path: Path) -> Path:
    dotenv = tmp_path / ".env"
    dotenv.write_text(manifests()["Secret/idp-secrets"]["stringData"][".env"])
    return dotenv


def test_secrets_hold_the_secret_key_and_the_signing_keys(tmp_path):
    dotenv = _shipped_dotenv(tmp_path)
    text = dotenv.read_text()
    dotenv.write_text(text.replace("replace-with-48-random-characters-from-python-secrets", secrets.token_urlsafe(48)))
    settings = Settings.from_environ({}, env_file=dotenv)
    assert settings.secret_key is not None and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.redis_url is not None and settings.smtp_password is not None
    assert manifests()["Secret/idp-keys"]["type"] == "Opaque"


@pytest.mark.parametrize("workload", ["Deployment/idp", "Job/idp-migrate"])
def test_secrets_reach_the_pods_as_a_file_never_in_the_environment(workload):
    """idp reads ``.env`` from its working directory: the Secret is mounted there read-only."""
    pod = manifests()[workload]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == container["workingDir"])
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "idp-secrets"
    assert "secretRef" not in str(container.get("envFrom")) and "secretKeyRef" not in str(container.get("env"))


def test_no_secret_key_shipped_in_deploy_would_be_accepted(tmp_path):
    """An operator who applies the examples as they are gets a refusal at start-up, not a
    provider whose key everyone who read the repository knows."""
    with pytest.raises(SettingsError, match="^IDP_SECRET_KEY"):
        Settings.from_environ({}, env_file=_shipped_dotenv(tmp_path))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["idp"]["environment"]
    assert "IDP_SECRET_KEY" not in compose, "compose lets idp make its own key in the keys volume"


def test_migration_job_service_ingress_autoscaler_and_disruption_budget():
    found = manifests()
    job = found["Job/idp-migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["migrate"]
    assert found["Service/idp"]["spec"]["selector"] == {"app.kubernetes.io/name": "idp"}
    backend = found["Ingress/idp"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "idp"
    assert found["Ingress/idp"]["spec"]["tls"]
    hpa = found["HorizontalPodAutoscaler/idp"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "idp" and hpa["minReplicas"] >= 2
    pdb = found["PodDisruptionBudget/idp"]["spec"]
    assert pdb["minAvailable"] >= 1 and pdb["selector"]["matchLabels"] == {"app.kubernetes.io/name": "idp"}


def test_the_metrics_have_a_port_the_ingress_does_not_route_to():
    """The metrics are kept from the world by the server itself (``IDP_METRICS_PORT``), not by a
    snippet annotation that ingress-nginx disables by default (CVE-2021-25742)."""
    found = manifests()
    ingress = found["Ingress/idp"]
    assert not any("snippet" in name for name in ingress["metadata"].get("annotations", {}))
    metrics_port = int(found["ConfigMap/idp-settings"]["data"]["IDP_METRICS_PORT"])
    container = found["Deployment/idp"]["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == metrics_port
    assert ports["http"] == int(container["args"][container["args"].index("--port") + 1]) != metrics_port
    routed = {path["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]}
    for name in routed:
        assert [port["targetPort"] for port in found[f"Service/{name}"]["spec"]["ports"]] == ["http"]
    assert [port["targetPort"] for port in found["Service/idp-metrics"]["spec"]["ports"]] == ["metrics"]


def test_the_manifests_validate_against_kubernetes_1_37_strictly():
    """Strict: a misspelt field (``readOnlyRootFileSystem``) is an error, not silently ignored."""
    import kubernetes_validate

    for document in manifests().values():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def _checkov() -> Path:
    """checkov in a virtual environment of its own, made once per machine in the temporary directory.

    It brings some 70 packages (boto3, numpy, an old ``packaging`` pinned exactly) that the
    project's own environment is better without, so it is installed from the package index by
    pip here rather than listed in the test extra. A lock keeps two suites from building it at once.
    """
    home = Path(tempfile.gettempdir()) / f"idp-checkov-{CHECKOV_VERSION}"
    python = home / "bin" / "python"
    with open(f"{home}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "installed").exists():
            shutil.rmtree(home, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, capture_output=True, timeout=120)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", f"checkov=={CHECKOV_VERSION}"],
                check=True,
                capture_output=True,
                timeout=900,
            )
            (home / "installed").touch()
    return python


@pytest.mark.timeout(1200)
def test_checkov_passes_every_check_of_deploy_or_says_why_not():
    """``checkov -d deploy`` as a reviewer would run it (``--skip-download``: no platform account,
    and no network here). A check the manifests do not pass is skipped in the manifest itself,
    with its reason, so the reason is read where the choice is made."""
    result = subprocess.run(
        [str(_checkov()), "-m", "checkov.main", "-d", str(DEPLOY), "--compact", "--quiet", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=DEPLOY.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name, document in manifests().items():
        for key, value in document["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(reason.split()) >= 4, (name, value)


def test_the_wheel_the_image_installs_serves_on_its_own(tmp_path: Path, own_database_url: str) -> None:
    """What the Dockerfile's build stage makes: the project's wheel, with the migrations, templates and
    static files inside it. Unpacked away from the checkout and run with ``idp serve``, it migrates an
    empty database and serves its pages; no file of the checkout is used."""
    checkout = Path(__file__).parent.parent
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(checkout)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("idp-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(installed)
    assert any(name.startswith("idp/migrations/versions/0001_") for name in names)
    assert "idp/templates/login.html" in names and any(name.startswith("idp/static/") for name in names)

    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | {
        "PYTHONPATH": str(installed),
        "HOME": str(home),
        "IDP_ISSUER": url,
        "IDP_DATABASE_URL": own_database_url,
        "IDP_KEYS_DIR": str(home / "keys"),
    }
    # The test's own environment has the checkout on sys.path (an editable install): take it off.
    without_checkout = f"import sys; sys.path = [p for p in sys.path if p.rstrip('/') != {str(checkout)!r}]; "
    probe = subprocess.run(
        [sys.executable, "-c", without_checkout + "import idp.migrate as m; print(m.__file__, m.migrations_dir())"],
        env=environ,
        cwd=home,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert probe.stdout.split() == [str(installed / "idp" / "migrate.py"), str(installed / "idp" / "migrations")]
    log = (home / "serve.log").open("wb")
    serve = without_checkout + "from idp.cli import main; sys.exit(main())"
    server = subprocess.Popen(
        [sys.executable, "-c", serve, "serve", "--port", str(port)],
        env=environ,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (home / "serve.log").read_text()
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (home / "serve.log").read_text()
            time.sleep(0.1)
        login = httpx.get(url + "/login")
        assert login.status_code == 200 and 'name="username"' in login.text
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', login.text)
        assert stylesheet and httpx.get(url + stylesheet.group(1)).status_code == 200
        assert httpx.get(url + "/.well-known/openid-configuration").json()["issuer"] == url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_image_installs_pinned_versions_of_every_runtime_dependency() -> None:
    """The Dockerfile builds its wheels under ``deploy/constraints.txt``, which pins each of the
    project's runtime dependencies to one version its own requirement admits, and nothing that is
    only for the tests."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    for text in project["dependencies"]:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not pinned"
        assert requirement.specifier.contains(pinned, prereleases=True), (text, pinned)
    for text in project["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(text).name) not in pins, f"{text} is for the tests only"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "deploy/constraints.txt" in dockerfile and "--constraint constraints.txt" in dockerfile
