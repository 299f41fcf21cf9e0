"""Facts the node deploys read from a host: each is a command and a parser of its output.

The parsers are pure and tested with JSON fixtures in ``tests/deploy_ops/facts/``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand


def _fields(output: list[str]) -> dict[str, str]:
    """``key=value`` lines → a dict (the first ``=`` splits; later lines win)."""
    fields = {}
    for line in output:
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value
    return fields


def _unbase64(text: str) -> str:
    try:
        return base64.b64decode(text).decode("utf-8", "replace")
    except ValueError:
        return text


class ServiceManager(FactBase[str]):
    """``systemd`` when systemd is the running init, else ``none`` (containers, lab hosts)."""

    def command(self) -> str:
        return "test -d /run/systemd/system && echo systemd || echo none"

    def process(self, output: list[str]) -> str:
        return "systemd" if output and output[0].strip() == "systemd" else "none"


class PhysicalCores(FactBase[int]):
    """The number of physical cores (hyper-threads not counted); online CPUs as a fallback."""

    def command(self) -> str:
        return (
            "n=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l); "
            'if [ "$n" -gt 0 ] 2>/dev/null; then echo "$n"; else getconf _NPROCESSORS_ONLN; fi'
        )

    def process(self, output: list[str]) -> int:
        try:
            return max(1, int(output[0].strip()))
        except (IndexError, ValueError):
            return 1


class SshClientAddress(FactBase[str | None]):
    """The controller's address as the host sees it (from ``$SSH_CONNECTION``), or None.

    Read it with ``_sudo=False``: sudo drops the SSH variables from the environment.
    """

    def command(self) -> str:
        return 'echo "ssh_connection=${SSH_CONNECTION:-$SSH_CLIENT}"'

    def process(self, output: list[str]) -> str | None:
        value = _fields(output).get("ssh_connection", "").split()
        return value[0] if value else None


class PythonVersion(FactBase[str | None]):
    """``major.minor`` of a Python interpreter on the host, or None when it is missing."""

    def command(self, python: str) -> StringCommand:
        return StringCommand(
            QuoteString(python),
            "-c",
            QuoteString('import sys; print("python=%d.%d" % sys.version_info[:2])'),
            "2>/dev/null || true",
        )

    def process(self, output: list[str]) -> str | None:
        return _fields(output).get("python") or None


class Download(FactBase[dict[str, Any] | None]):
    """A downloaded file and its ``.part``: ``{size, sha256, part_size}``; None if neither.

    The file is hashed only when its size is the expected one (a 7 GB model takes a while).
    """

    def command(self, path: str, size: int) -> StringCommand:
        return StringCommand(
            "f=",
            QuoteString(path),
            "; s=",
            QuoteString(str(size)),
            '; if [ -f "$f" ]; then n=$(stat -c %s "$f"); echo "size=$n"; ',
            'if [ "$n" = "$s" ]; then echo "sha256=$(sha256sum "$f" | cut -d" " -f1)"; fi; fi; ',
            'if [ -f "$f.part" ]; then echo "part_size=$(stat -c %s "$f.part")"; fi',
            _separator="",
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        fields = _fields(output)
        if not fields:
            return None
        return {
            "size": int(fields["size"]) if "size" in fields else None,
            "sha256": fields.get("sha256") or None,
            "part_size": int(fields["part_size"]) if "part_size" in fields else None,
        }


class PidfileProcess(FactBase[int | None]):
    """The pid in a pidfile when that process is alive, else None."""

    def command(self, pidfile: str) -> StringCommand:
        return StringCommand(
            "p=$(cat",
            QuoteString(pidfile),
            '2>/dev/null) && kill -0 "$p" 2>/dev/null && echo "pid=$p" || true',
        )

    def process(self, output: list[str]) -> int | None:
        pid = _fields(output).get("pid", "")
        return int(pid) if pid.isdigit() else None


class FirewallChain(FactBase[dict[str, Any]]):
    """An iptables chain's rules and whether INPUT sends a TCP port to it.

    Returns ``{"exists": bool, "rules": ["-A CHAIN ...", ...], "hooked": bool}``.
    """

    def requires_command(self, chain: str, port: int) -> str:
        return "iptables"

    def command(self, chain: str, port: int) -> StringCommand:
        chain_q = QuoteString(chain)
        return StringCommand(
            "if iptables -w -S",
            chain_q,
            ">/dev/null 2>&1; then echo exists; iptables -w -S",
            chain_q,
            "; fi; iptables -w -C INPUT -p tcp --dport",
            str(port),
            "-j",
            chain_q,
            "2>/dev/null && echo hooked || true",
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        lines = [line.strip() for line in output]
        return {
            "exists": "exists" in lines,
            "rules": [line for line in lines if line.startswith("-A ")],
            "hooked": "hooked" in lines,
        }


class NodeCheck(FactBase[dict[str, Any]]):
    """Is the node up: process alive, port listening, a one-token completion answered.

    Polls for up to ``wait`` seconds (plus one request's time) while the process is alive: a
    big model takes a while to load. Returns ``{"process", "listening", "answered"}`` (bools)
    and ``"detail"``: the answer's text or the last error.
    """

    def command(
        self, process_check: str, address: str, port: int, engine: str, wait: int
    ) -> StringCommand:
        url = f"http://{address}:{port}/v1/engines/{engine}/completions"
        body = json.dumps({"prompt": "Hello", "max_tokens": 1})
        return StringCommand(
            f"end=$(( $(date +%s) + {max(1, wait)} )); out=; while :; do",
            f"if ! ( {process_check} ) >/dev/null 2>&1; then echo process=down; break; fi;",
            "echo process=up;",
            f"if out=$(curl -sS -f -m {min(60, max(5, wait))}",
            "-H 'Content-Type: application/json' -d",
            QuoteString(body),
            QuoteString(url),
            # base64: the answer may hold any character (pyinfra splits output into lines)
            '2>&1); then echo "answer64=$(printf %s "$out" | head -c 4000 | base64 -w0)"; break;',
            'fi; if [ "$(date +%s)" -ge "$end" ]; then',
            'echo "error64=$(printf %s "$out" | head -c 500 | base64 -w0)"; break; fi;',
            "sleep 1; done;",
            f'if ss -Hltn "sport = :{port}" 2>/dev/null | grep -q .; then echo listening=yes;',
            "else echo listening=no; fi",
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        fields = _fields(output)
        answered, detail = False, " ".join(_unbase64(fields.get("error64", "")).split())
        if "answer64" in fields:
            body = _unbase64(fields["answer64"])
            try:
                answer = json.loads(body)
            except ValueError:
                detail = f"not JSON: {body[:200]!r}"
            else:
                text = answer.get("text") if isinstance(answer, dict) else None
                answered = isinstance(text, str | list)
                detail = repr(text) if answered else f"no text in {body[:200]!r}"
        return {
            "process": fields.get("process") == "up",
            "listening": fields.get("listening") == "yes",
            "answered": answered,
            "detail": detail,
        }


class MissingLibraries(FactBase[list[str]]):
    """Shared libraries a binary needs that the host lacks (``ldd`` says "not found")."""

    def command(self, binary: str) -> StringCommand:
        return StringCommand(
            "ldd", QuoteString(binary), "2>/dev/null | awk '/not found/ {print \"missing=\" $1}'"
        )

    def process(self, output: list[str]) -> list[str]:
        return [line.partition("=")[2] for line in output if line.startswith("missing=")]
