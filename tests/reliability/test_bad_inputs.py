"""The catalogue of bad inputs: configs, CLI overrides, templates, input files, schemas,
static nodes and inventories. Each case runs ``python -m runner`` and must:

* exit non-zero (2: a configuration error; 3 for hosts that cannot be reached);
* say what is wrong in one line on stderr that names the file, key or value;
* send nothing (a fake node on loopback counts every request);
* leave the earlier outputs of the run directory and the journal untouched.

The CLI processes of the catalogue run a few at a time (one module-wide fixture), so ~50
cases cost about as much as ~20 run one after another.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability._harness import REPO, FakeNode, Ledger, child_env

EARLIER = {
    "results.jsonl": '{"id": "earlier", "status": "ok"}\n',
    "report.json": '{"earlier": true}\n',
    "movie_details.json": '["earlier"]\n',
}
STORE = '{"id": "earlier", "key": "k", "status": "ok", "answer": "kept"}\n'
PARALLEL = 3


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: the test id.
        group: what kind of input (config, override, template, input, schema, node,
            inventory).
        overrides: CLI arguments replacing or adding to the defaults; ``{dir}`` is the
            case's folder, ``{node}`` the fake node's address, ``{closed}`` a closed port.
        names: strings the error line must contain (file, key, value and what is wrong).
        files: files written into the case's folder first (name → text or bytes).
        exit: the expected exit status.
        starts: the run starts (hosts that cannot be reached are only found out by trying):
            it writes this run's report and output, so only the journal and the earlier
            ``results.jsonl`` are checked (see test_reused_run_dir.py for the rest).
    """

    id: str
    group: str
    overrides: tuple[str, ...]
    names: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    exit: int = 2
    starts: bool = False


def inventory(hosts: str) -> dict[str, str | bytes]:
    return {"inventory.py": f"ts_servers = {hosts}\n"}


LAB = ("cluster=lab", "cluster.inventory={dir}/inventory.py")
CASES = [
    # --- configuration keys and values
    Case("unknown-key", "config", ("engine.slotz=2",), ("engine.slotz", "slotz")),
    Case("unknown-key-appended", "config", ("+engine.slotz=2",), ("unknown key 'engine.slotz'",)),
    Case("unknown-top-level-key", "config", ("+retries=3",), ("unknown key 'retries'",)),
    Case("misspelt-job", "config", ("job=movie_detials",), ("movie_detials",)),
    Case("misspelt-cluster", "config", ("cluster=statik",), ("cluster/statik", "Available")),
    Case("missing-group-option", "config", ("engine=fast",), ("engine/fast",)),
    Case("wrong-type-int", "config", ("engine.slots=abc",), ("engine.slots", "abc")),
    Case(
        "wrong-type-float-for-int", "config", ("engine.max_attempts=1.5",), ("max_attempts", "1.5")
    ),
    Case("wrong-type-bool", "config", ("engine.stream=maybe",), ("engine.stream", "maybe")),
    Case("wrong-enum-value", "config", ("progress=loud",), ("progress", "loud")),
    Case("no-job", "config", ("job=__none__",), ("job",)),
    Case("missing-input-path", "config", ("job.input.path=???",), ("job.input.path", "missing")),
    Case("missing-model-engine", "config", ("model.engine=???",), ("model.engine", "missing")),
    Case("zero-slots", "config", ("engine.slots=0",), ("engine.slots", "at least 1", "0")),
    Case("negative-stall", "config", ("engine.stall_timeout=-1",), ("engine.stall_timeout", "-1")),
    Case("zero-attempts", "config", ("engine.max_attempts=0",), ("engine.max_attempts", "0")),
    Case("negative-backoff", "config", ("engine.backoff_max=-1",), ("engine.backoff_max", "-1")),
    Case("zero-no-node-wait", "config", ("engine.no_node_timeout=0",), ("no_node_timeout", "0")),
    Case("zero-max-tokens", "config", ("job.max_tokens=0",), ("job.max_tokens", "0")),
    Case("top-p-out-of-range", "config", ("model.top_p=1.5",), ("model.top_p", "1.5")),
    Case("bad-scheme", "config", ("cluster.scheme=ftp",), ("cluster.scheme", "ftp")),
    # --- the command line itself
    Case("override-syntax", "override", ("engine.slots=[1,",), ("[1,",)),
    Case("override-without-value", "override", ("engine.slots",), ("engine.slots", "EQUAL")),
    # (--help without a job is no longer an error: test_cli.py checks what it prints)
    # --- templates
    Case(
        "template-missing-variable",
        "template",
        ("job.template={dir}/t.j2",),
        ("t.j2", "'year'"),
        {"t.j2": 'Details of "{{ title }}" ({{ year }}).'},
    ),
    Case(
        "template-syntax-error",
        "template",
        ("job.template={dir}/t.j2",),
        ("t.j2:1", "syntax error"),
        {"t.j2": 'Details of "{{ title "'},
    ),
    Case("template-missing-file", "template", ("job.template={dir}/nope.j2",), ("nope.j2",)),
    Case("system-prompt-syntax", "template", ("job.system='{% if %}'",), ("job.system", "syntax")),
    Case(
        "job-name-leaves-the-journal-dir",
        "config",
        ("job.name=../../escape",),
        ("job.name must be a plain file name", "../../escape"),
    ),
    # --- input files
    Case(
        "input-empty",
        "input",
        ("job.input.path={dir}/e.txt",),
        ("e.txt", "no items"),
        {"e.txt": "\n# only a comment\n"},
    ),
    Case("input-missing", "input", ("job.input.path={dir}/none.txt",), ("none.txt", "not found")),
    Case(
        "input-nul-byte",
        "input",
        ("job.input.path={dir}/l.txt",),
        ("l.txt:2", "NUL byte"),
        {"l.txt": b"Heat\nAl\x00ien\n"},
    ),
    Case(
        "input-line-past-1-mib",
        "input",
        ("job.input.path={dir}/l.txt",),
        ("l.txt:2", "line longer than 1 MiB"),
        {"l.txt": b"Heat\n" + b"x" * (1 << 21)},
    ),
    Case(
        "input-endless-dev-zero",
        "input",
        ("job.input.path=/dev/zero", "job.input.format=lines"),
        ("/dev/zero:1", "line longer than 1 MiB"),
    ),
    Case("input-is-a-directory", "input", ("job.input.path={dir}",), ("directory",)),
    Case(
        "input-not-utf8",
        "input",
        ("job.input.path={dir}/l.txt",),
        ("l.txt:2", "not UTF-8"),
        {"l.txt": b"Heat\nCaf\xe9\n"},
    ),
    Case(
        "csv-bad-row",
        "input",
        ("job.input.path={dir}/f.csv",),
        ("f.csv:3", "expected 2 fields"),
        {"f.csv": "title,year\nHeat,1995\nAlien,1979,extra\n"},
    ),
    Case(
        "csv-unclosed-quote",
        "input",
        ("job.input.path={dir}/f.csv",),
        ("f.csv:3", "bad CSV"),
        {"f.csv": 'title,year\nHeat,1995\n"Alien,1979\n'},
    ),
    Case(
        "jsonl-bad-line",
        "input",
        ("job.input.path={dir}/f.jsonl",),
        ("f.jsonl:2", "not valid JSON"),
        {"f.jsonl": '{"title": "Heat"}\n{"title": "Alien",\n'},
    ),
    Case(
        "jsonl-not-an-object",
        "input",
        ("job.input.path={dir}/f.jsonl",),
        ("f.jsonl:1", "expected a JSON object"),
        {"f.jsonl": '["Heat"]\n'},
    ),
    Case(
        "duplicate-ids",
        "input",
        ("job.input.path={dir}/f.csv", "job.input.id_field=id"),
        ("f.csv:4", "duplicate id '1'"),
        {"f.csv": "id,title\n1,Heat\n2,Alien\n1,Ran\n"},
    ),
    Case(
        "duplicate-lines",
        "input",
        ("job.input.path={dir}/l.txt",),
        ("l.txt:3", "duplicate id"),
        {"l.txt": "Heat\nAlien\nHeat\n"},
    ),
    Case(
        "missing-id-field",
        "input",
        ("job.input.path={dir}/f.csv", "job.input.id_field=id"),
        ("f.csv:2", "'id'"),
        {"f.csv": "title\nHeat\n"},
    ),
    Case(
        "unknown-extension",
        "input",
        ("job.input.path={dir}/films.xlsx",),
        ("films.xlsx", "extension"),
        {"films.xlsx": "Heat\n"},
    ),
    # --- JSON Schemas
    Case(
        "schema-invalid",
        "schema",
        ("job.schema={dir}/s.json",),
        ("s.json", "invalid JSON Schema", "objekt"),
        {"s.json": '{"type": "objekt"}'},
    ),
    Case(
        "schema-not-json",
        "schema",
        ("job.schema={dir}/s.json",),
        ("s.json:1", "not valid JSON"),
        {"s.json": "{type: object}"},
    ),
    Case(
        "schema-missing-file", "schema", ("job.schema={dir}/none.json",), ("none.json", "not found")
    ),
    Case("json-job-without-schema", "schema", ("job.schema=null",), ("job.schema",)),
    Case("schema-on-a-text-job", "schema", ("job.answer=text",), ("job.schema", "text")),
    # --- statically listed nodes
    Case(
        "node-without-port",
        "node",
        ("cluster.nodes=[{address: '127.0.0.1'}]",),
        ("cluster.nodes[0].address", "'127.0.0.1'", "host:port"),
    ),
    Case(
        "node-bad-port",
        "node",
        ("cluster.nodes=[{address: '127.0.0.1:70000'}]",),
        ("cluster.nodes[0].address", "70000"),
    ),
    Case(
        "node-zero-slots",
        "node",
        ("cluster.nodes=[{address: '{node}', slots: 0}]",),
        ("cluster.nodes[0]", "slots"),
    ),
    Case(
        "node-key-variable-unset",
        "node",
        ("cluster.nodes=[{address: '{node}', api_key_env: RELIABILITY_UNSET_KEY}]",),
        ("cluster.nodes[0]", "RELIABILITY_UNSET_KEY"),
    ),
    Case("no-nodes", "node", ("cluster.nodes=[]",), ("no nodes",)),
    Case(
        "node-listed-twice",
        "node",
        ("cluster.nodes=[{address: '{node}'}, {address: '{node}'}]",),
        ("listed twice",),
    ),
    # --- inventories
    Case(
        "inventory-missing",
        "inventory",
        ("cluster=lab", "cluster.inventory={dir}/none.py"),
        ("none.py", "no such file"),
    ),
    Case(
        "inventory-syntax-error", "inventory", LAB, ("inventory.py", "syntax error"), inventory("[")
    ),
    Case("inventory-no-hosts", "inventory", LAB, ("inventory.py", "no hosts"), inventory("[]")),
    Case(
        "inventory-no-such-group",
        "inventory",
        LAB,
        ("inventory.py", "no group 'ts_servers'"),
        {"inventory.py": "web = ['127.0.0.1']\n"},
    ),
    Case(
        "inventory-bad-port",
        "inventory",
        LAB,
        ("inventory.py", "n1", "port"),
        inventory("[('n1', {'node_address': '127.0.0.1', 'node_port': 0})]"),
    ),
    Case(
        "inventory-unreachable-hosts",
        "inventory",
        LAB,
        ("no node answers", "n1 (http://127.0.0.1:", "TransportError"),
        inventory("[('n1', {'node_address': '127.0.0.1', 'node_port': {closed}})]"),
        exit=3,
    ),
    Case(
        "max-tokens-past-the-nodes-context",
        "node",
        ("job.max_tokens=1000000",),
        ("max_tokens=1000000", "context of 2048 tokens"),
    ),
    Case(
        "node-address-with-a-path",
        "node",
        ("cluster.nodes=[{address: 'http://{node}/v1'}]",),
        ("cluster.nodes[0].address", "has a path, query or credentials"),
    ),
    Case(
        "schema-dangling-ref",
        "schema",
        ("job.schema={dir}/bad.schema.json",),
        ("bad.schema.json", "$ref '#/$defs/year' does not resolve"),
        {"bad.schema.json": '{"type": "object", "properties": {"y": {"$ref": "#/$defs/year"}}}'},
    ),
]


def defaults(folder: Path, node: str) -> dict[str, str]:
    """The arguments every case starts from (a valid run), by key."""
    return {
        "job": "job=movie_details",
        "job.template": f"job.template={folder}/details.j2",
        "job.input.path": f"job.input.path={folder}/films.txt",
        "job.input.format": "job.input.format=auto",
        "hydra.run.dir": f"hydra.run.dir={folder}/run",
        "journal_dir": f"journal_dir={folder}/journal",
        "progress": "progress=off",
        "cluster": "cluster=static",
        "cluster.nodes": f"cluster.nodes=[{{address: '{node}'}}]",
        "engine.connect_timeout": "engine.connect_timeout=1",
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Outcome:
    case: Case
    folder: Path
    proc: subprocess.CompletedProcess[str]


def prepare(case: Case, folder: Path, node: str) -> list[str]:
    """Write the case's files and the earlier outputs; return its command line."""
    folder.mkdir(parents=True)
    (folder / "films.txt").write_text("Heat\nAlien\n")
    (folder / "details.j2").write_text('Give the details of the movie "{{ title }}".\n')
    run = folder / "run"
    run.mkdir()
    for name, text in EARLIER.items():
        (run / name).write_text(text)
    (folder / "journal").mkdir()
    (folder / "journal" / "movie_details.jsonl").write_text(STORE)
    port = closed_port()

    def fill(text: str) -> str:
        return (
            text.replace("{dir}", str(folder))
            .replace("{node}", node)
            .replace("{closed}", str(port))
        )

    for name, content in case.files.items():
        target = folder / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(fill(content))
    args = defaults(folder, node)
    for override in case.overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        args[key] = fill(override)
    if args["job"] == "job=__none__":
        args = {k: v for k, v in args.items() if not k.startswith("job")}
    return [sys.executable, "-m", "runner", *args.values()]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeNode]:
    fake = FakeNode(tmp_path_factory.mktemp("node"), "counting").start()
    try:
        yield fake
    finally:
        fake.kill()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, node: FakeNode) -> dict[str, Outcome]:
    """Every case of the catalogue, run a few at a time."""
    root = tmp_path_factory.mktemp("bad")

    def run(case: Case) -> Outcome:
        folder = root / case.id
        argv = prepare(case, folder, node.address)
        proc = subprocess.run(
            argv,
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Outcome(case, folder, proc)

    with ThreadPoolExecutor(PARALLEL) as pool:
        return {o.case.id: o for o in pool.map(run, CASES)}


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{proc.stderr[-2000:]}"
    return lines[0]


def test_the_catalogue_has_at_least_25_cases_in_every_group() -> None:
    groups = {c.group for c in CASES}
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    assert groups == {"config", "override", "template", "input", "schema", "node", "inventory"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_bad_input_is_one_line_naming_it_with_nothing_sent_or_overwritten(
    case: Case, outcomes: dict[str, Outcome], node: FakeNode, ledger: Ledger
) -> None:
    outcome = outcomes[case.id]
    proc = outcome.proc
    said = " ".join(proc.stderr.split())
    assert proc.returncode == case.exit, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    if case.exit == 2:
        line = error_line(proc)
        assert line.startswith("error: "), line
        missing = [name for name in case.names if name not in line]
    else:  # the run started, then stopped: a summary table and the reason
        missing = [name for name in case.names if name not in said]
    assert not missing, f"the message does not name {missing}: {said[-500:]}"
    run = outcome.folder / "run"
    # A run that started keeps the earlier run's files in previous-1/ (runner/_sink.py); one
    # stopped by a bad input leaves them where they were.
    kept = run / "previous-1" if case.starts else run
    for name, text in EARLIER.items():
        assert (kept / name).read_text() == text, f"{name} was overwritten"
    assert (outcome.folder / "journal" / "movie_details.jsonl").read_text() == STORE
    assert not node.requests(), "a bad input let requests through"
    ledger.add(
        "bad input",
        f"{case.group}: {case.id}",
        exit=proc.returncode,
        message=(error_line(proc) if case.exit == 2 else said[said.find("Run stopped") :]).replace(
            str(outcome.folder), "<dir>"
        )[:300],
        sent=0,
    )
