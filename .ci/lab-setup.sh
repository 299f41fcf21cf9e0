#!/usr/bin/env bash
# What the SSH lab (tests/lab) and the deploy tests (tests/deploy_ops) need on this machine.
#
# Lab hosts are network namespaces on this machine and share its /usr and dpkg database, so
# the packages the deploys want on a node are installed here first: apt is then a no-op on
# the lab hosts (which have no route to a package mirror). Run as root; idempotent.
#
# pyinfra goes into the project's venv (PYTHON, default .venv/bin/python; `make install-test`
# passes it), never into the system Python.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PYTHON="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"

if [ "$(id -u)" -ne 0 ]; then
  echo "lab-setup: run as root (apt-get, network namespaces)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
  echo "lab-setup: $PYTHON is not a virtual environment's python (or is missing): run \`make install\` first, or set PYTHON=/path/to/venv/bin/python" >&2
  exit 1
fi

# libmicrohttpd's runtime package was renamed in Debian 13 / Ubuntu 24.04 (64-bit time_t).
microhttpd=libmicrohttpd12
apt-get update -qq
if apt-cache show libmicrohttpd12t64 >/dev/null 2>&1; then
  microhttpd=libmicrohttpd12t64
fi
apt-get install -y -qq --no-install-recommends \
  openssh-server openssh-client iproute2 iptables curl ca-certificates \
  util-linux procps python3 python3-venv libgomp1 "$microhttpd" nginx-light >/dev/null
# A headless Chromium: the tests load report.html in a real browser (tests/_browser.py).
# Debian ships the headless shell alone; elsewhere the full browser does the same.
if apt-cache show chromium-headless-shell >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null
else
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# libgomp1: OpenMP runtime of the xllamacpp wheel (the lab hosts share these packages).
# nginx-light: the llm-swarm-style baseline of the benchmarks (bench/_nginx.py, smoke tests).

# pyinfra for the deploys, pyinfra-testing for the operation fixtures (kept out of trio tests).
"$PYTHON" -m pip install -q 'pyinfra>=3.10,<4' 'pyinfra-testing==0.2.1'
