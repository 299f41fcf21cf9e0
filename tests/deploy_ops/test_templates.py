"""The templates render with every variable given (StrictUndefined) into files that work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jinja2
import json5
import pytest

from deploy.settings import Role, node_settings
from runner.node._cfg import parse_config

TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "templates"


def render(name: str, **values: object) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((TEMPLATES / name).read_text(encoding="utf-8")).render(**values)


def cfg_values(tmp_path: Path, **extra: object) -> dict[str, object]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    return {
        "service_name": "ts_node",
        "model_name": "smollm2",
        "model_filename": str(model),
        "n_threads": 2,
        "n_parallel": None,
        "n_ctx": None,
        "max_queue": None,
        "port": 8088,
        "bind_addr": "0.0.0.0",
        "log_filename": "/opt/ts_node/log/ts_node.log",
        "log_start": True,
        "cfg_extra": {},
        **extra,
    }


def test_cfg_is_what_the_open_node_reads(tmp_path: Path) -> None:
    text = render("ts_server.cfg.j2", **cfg_values(tmp_path))
    cfg = parse_config(json5.loads(text), source=tmp_path / "ts_server.cfg")
    assert [(m.name, m.path.name) for m in cfg.models] == [("smollm2", "model.gguf")]
    assert (cfg.local_port, cfg.bind_addr, cfg.n_threads, cfg.log_start) == (
        8088,
        "0.0.0.0",
        2,
        True,
    )


def test_open_node_keys_left_unset_are_the_nodes_defaults(tmp_path: Path) -> None:
    data = json5.loads(render("ts_server.cfg.j2", **cfg_values(tmp_path)))
    assert not {"n_parallel", "n_ctx", "max_queue"} & set(data)
    defaults = parse_config({"models": data["models"]}, source=tmp_path / "d.cfg")
    cfg = parse_config(data, source=tmp_path / "ts_server.cfg")
    assert (cfg.n_parallel, cfg.n_ctx, cfg.max_queue) == (
        defaults.n_parallel,
        defaults.n_ctx,
        defaults.max_queue,
    )


def test_open_node_keys_are_written_as_the_node_reads_them(tmp_path: Path) -> None:
    values = cfg_values(tmp_path, n_parallel=6, n_ctx=4096, max_queue=0)
    text = render("ts_server.cfg.j2", **values)
    cfg = parse_config(json5.loads(text), source=tmp_path / "ts_server.cfg")
    assert (cfg.n_threads, cfg.n_parallel, cfg.n_ctx, cfg.max_queue) == (2, 6, 4096, 0)
    assert "\n\n" not in text  # no blank lines where keys are left out or added


def test_cfg_extra_keys_are_written(tmp_path: Path) -> None:
    text = render(
        "ts_server.cfg.j2", **cfg_values(tmp_path, cfg_extra={"cuda": True, "max_memory": 12})
    )
    data = json5.loads(text)
    assert (data["cuda"], data["max_memory"]) == (True, 12)
    assert parse_config(data, source=tmp_path / "c.cfg").ignored == ("cuda", "max_memory")


@pytest.mark.parametrize("key", ["n_threads", "n_parallel", "max_queue"])
def test_a_missing_variable_is_an_error(tmp_path: Path, key: str) -> None:
    values = cfg_values(tmp_path)
    del values[key]
    with pytest.raises(jinja2.UndefinedError, match=key):
        render("ts_server.cfg.j2", **values)


def test_unit_restarts_on_failure_and_applies_the_firewall_first() -> None:
    s = node_settings({}, role=Role.open_node)
    text = render(
        "node.service.j2",
        service_name=s.service_name,
        description="node",
        user=s.service_user,
        workdir=str(s.install_dir),
        firewall_script="/opt/ts_node/bin/ts_node-firewall",
        command="/opt/ts_node/venv/bin/python -m runner.node /opt/ts_node/ts_server.cfg",
        console_log=str(s.console_log),
    )
    assert "Restart=on-failure" in text
    assert "ExecStartPre=+/opt/ts_node/bin/ts_node-firewall" in text
    assert "User=ts_node" in text


def test_supervisor_script_is_valid_shell(tmp_path: Path) -> None:
    script = tmp_path / "supervise"
    script.write_text(
        render(
            "supervise.sh.j2",
            service_name="ts_node",
            command="/bin/true",
            console_log="/tmp/console.log",
            restart_delay=5,
        )
    )
    subprocess.run(["sh", "-n", str(script)], check=True)
