"""The image as built, and the examples people copy: examples/sidecar/'s compose files and
Kubernetes pod must name paths, volumes and ports that exist in the image and agree with
lbsync's configuration (read by lbsync's own loader) and with each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.podman import LBSYNC_IMAGE, ROOT, UID, Builds, Podman

from lbsync.config import Config, ReloadMethod, load, parse_listen

SIDECAR = ROOT / "examples" / "sidecar"
API_PORT = 9180


def yaml_documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((SIDECAR / name).read_text()) if doc]


def lbsync_config(path: Path, environment: dict[str, str], tmp_path: Path) -> Config:
    """A configuration as the container reads it: the file, and the container's LBSYNC_*
    variables (the token file replaced by one of the test's, since the secret is not here)."""
    token = tmp_path / "token"
    token.write_text("a-token-for-the-test\n")
    overlay = dict(environment)
    if "LBSYNC_API_TOKEN_FILE" in overlay:
        overlay["LBSYNC_API_TOKEN_FILE"] = str(token)
    return load(path, environ=overlay)


def haproxy_file(command: list[str]) -> Path:
    """The configuration file (-f) of an HAProxy command."""
    assert command[0] == "haproxy", command
    return Path(command[command.index("-f") + 1])


def haproxy_paths(command: list[str]) -> tuple[Path, Path]:
    """The master socket (-S, before its options) and the file (-f) of an HAProxy command."""
    socket = command[command.index("-S") + 1].split(",")[0]
    return Path(socket), haproxy_file(command)


def in_image(podman: Podman, script: str) -> str:
    """Run a shell script in the image, as its user; its output."""
    return podman("run", "--rm", "--entrypoint", "sh", LBSYNC_IMAGE, "-c", script).stdout


def check_against_image(podman: Podman, directories: list[str], files: list[str]) -> None:
    """Each directory exists in the image and its user may write there; each file exists."""
    script = " && ".join(
        [f'test -d "{d}" -a -w "{d}" || echo "not a writable directory: {d}"' for d in directories]
        + [f'test -f "{f}" || echo "no such file: {f}"' for f in files]
        + ["true"]
    )
    assert in_image(podman, script) == ""


def test_the_image_runs_lbsync_unprivileged_with_its_healthcheck(
    podman: Podman, images: Builds
) -> None:
    image = podman.inspect(LBSYNC_IMAGE)
    config = image["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/usr/local/bin/lbsync-entrypoint"]
    assert config["Cmd"] == ["run"]
    # podman keeps it beside the OCI config, which has no HEALTHCHECK (built --format docker)
    assert image["Healthcheck"]["Test"] == ["CMD", "lbsync-health"]
    assert f"{API_PORT}/tcp" in config["ExposedPorts"]
    assert "LBSYNC_CONFIG=/etc/lbsync/lbsync.toml" in config["Env"]
    labels = config["Labels"]
    for label in ("title", "description", "licenses", "version"):
        assert labels[f"org.opencontainers.image.{label}"], label
    assert in_image(podman, "id -u; lbsync --version").split() == [str(UID), "lbsync", "0.1.0"]
    # the validators of both kinds run as that user
    assert in_image(podman, "haproxy -v | head -n1").startswith("HAProxy version 2.6")
    assert "nginx" in podman("run", "--rm", "--entrypoint", "nginx", LBSYNC_IMAGE, "-v").stderr


def test_the_compose_files_agree_with_the_image_and_with_lbsync(
    podman: Podman, images: Builds, tmp_path: Path
) -> None:
    compose = yaml_documents("compose.yaml")[0]["services"]
    override = yaml_documents("compose.docker-socket.yaml")[0]["services"]
    lbsync, haproxy = compose["lbsync"], compose["haproxy"]
    mounts = dict(volume.split(":")[:2][::-1] for volume in lbsync["volumes"])  # path -> source
    proxy_mounts = dict(volume.split(":")[:2][::-1] for volume in haproxy["volumes"])
    environment = lbsync["environment"]
    socket, proxy_file = haproxy_paths(haproxy["command"])

    for source in ("consul", "etcd"):
        path = f"/etc/lbsync/{source}.toml"
        assert environment["LBSYNC_CONFIG"].replace("${LBSYNC_SOURCE:-consul}", source) == path
        assert mounts[path] == f"./{source}.toml"
        config = lbsync_config(SIDECAR / f"{source}.toml", environment, tmp_path)
        (target,) = config.targets
        assert target.reload.method is ReloadMethod.MASTER_CLI
        assert (target.reload.socket, target.dest) == (socket, proxy_file)
        # the file's directory and the socket's are the same volumes in both containers
        for directory in (str(target.dest.parent), str(socket.parent)):
            assert mounts[directory] == proxy_mounts[directory], directory
        assert str(target.run_dir) == str(socket.parent)
        listen = parse_listen(config.api.listen)
        assert listen == ("0.0.0.0", API_PORT)
        assert f"127.0.0.1:{API_PORT}:{API_PORT}" in lbsync["ports"]
        assert target.vars["bind"] == ["*:8080"]
    assert "8080:8080" in haproxy["ports"]
    assert environment["LBSYNC_API_TOKEN_FILE"] == f"/run/secrets/{lbsync['secrets'][0]}"
    assert haproxy["user"] == f"{UID}:{UID}"
    assert haproxy["ulimits"]["nofile"]["hard"] == 4096

    docker = lbsync_config(SIDECAR / "consul-docker.toml", environment, tmp_path).targets[0]
    assert docker.reload.method is ReloadMethod.DOCKER
    assert docker.reload.container == override["haproxy"]["container_name"]
    assert docker.dest == haproxy_file(override["haproxy"]["command"])
    assert "-S" not in override["haproxy"]["command"]  # no master socket: the engine confirms
    assert any(v.endswith(":/var/run/docker.sock") for v in override["lbsync"]["volumes"])

    check_against_image(
        podman,
        directories=sorted({str(docker.dest.parent), str(socket.parent), "/var/lib/lbsync"}),
        files=["/etc/lbsync/lbsync.toml", "/var/lib/lbsync/services.toml"],
    )


def test_the_pod_agrees_with_the_image_and_with_lbsync(
    podman: Podman, images: Builds, tmp_path: Path
) -> None:
    documents = {doc["kind"]: doc for doc in yaml_documents("pod.yaml")}
    pod = documents["Pod"]["spec"]
    (lbsync,) = pod["initContainers"]
    (haproxy,) = pod["containers"]
    assert lbsync["restartPolicy"] == "Always"  # a native sidecar, started first
    config_file = tmp_path / "lbsync.toml"
    config_file.write_text(documents["ConfigMap"]["data"]["lbsync.toml"])
    environment = {item["name"]: item["value"] for item in lbsync["env"]}
    config = lbsync_config(config_file, environment, tmp_path)
    (target,) = config.targets

    def mounted(container: dict[str, Any]) -> dict[str, str]:
        return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    mine, theirs = mounted(lbsync), mounted(haproxy)
    socket, proxy_file = haproxy_paths(haproxy["args"])
    assert (target.reload.socket, target.dest) == (socket, proxy_file)
    for directory in (str(target.dest.parent), str(socket.parent)):
        assert mine[directory] == theirs[directory], directory
    assert mine[str(Path(environment["LBSYNC_CONFIG"]).parent)] == "lbsync-config"
    assert mine[str(Path(environment["LBSYNC_API_TOKEN_FILE"]).parent)] == "lbsync-api-token"

    port = {p["name"]: p["containerPort"] for p in lbsync["ports"]}["lbsync-api"]
    assert parse_listen(config.api.listen) == ("0.0.0.0", port) == ("0.0.0.0", API_PORT)
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert lbsync[probe]["httpGet"] == {"path": path, "port": "lbsync-api"}
    assert haproxy["ports"][0]["containerPort"] == 8080
    assert target.vars["bind"] == ["*:8080"]
    assert pod["securityContext"]["runAsUser"] == UID == pod["securityContext"]["runAsGroup"]
    for container in (lbsync, haproxy):
        assert container["resources"]["requests"] and container["resources"]["limits"]
    check_against_image(
        podman, directories=sorted({str(target.dest.parent), str(socket.parent)}), files=[]
    )


@pytest.mark.parametrize("name", ["compose.yaml", "compose.docker-socket.yaml", "pod.yaml"])
def test_every_example_names_only_files_that_exist(name: str) -> None:
    assert yaml_documents(name)  # parses, and is not empty
    named = re.findall(r"\./[\w.-]+\.toml", (SIDECAR / name).read_text())
    for local in named:
        assert (SIDECAR / local).is_file(), local
