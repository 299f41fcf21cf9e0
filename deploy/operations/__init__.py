"""Custom pyinfra operations: each reads facts and yields only the commands still needed.

- ``artifact``: a download checked against sha256 and size (a failed check leaves nothing
  behind), and a tarball unpacked once per checksum.
- ``daemon``: a process kept running by start-stop-daemon and a restart loop (no systemd).
- ``firewall``: an iptables allow-list in front of one TCP port, replaced atomically.
- ``health``: a node that must answer a one-token completion, or the host fails with its log.
- ``wheelhouse``: a venv filled from an uploaded wheelhouse, no package index needed.

Each is tested with JSON fixtures (facts in, commands out) in ``tests/deploy_ops/``.
"""
