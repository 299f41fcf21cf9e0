"""Deploy the open node (python -m runner.node, llama.cpp) to the inventory's hosts.

    python -m deploy.wheelhouse                      # once: the wheels a node needs
    pyinfra inventory.py deploy/open_node.py         # from the repository root

Each host gets a venv filled from the uploaded wheelhouse (no compiler, no package index) and
the same ts_server.cfg, service, firewall and check as ts_server. See docs/deploy.md.
"""

from deploy.settings import Role
from deploy.tasks import artifacts, config, firewall, health, host_settings, service, system, venv

settings = host_settings.for_host(Role.open_node)
sources = firewall.allowed_sources(settings) if settings.firewall else None

system.prepare(settings)
program = venv.open_node(settings)
changes = [program]
if settings.model is not None:  # a GGUF of your own instead of the packaged SmolLM2
    changes.append(artifacts.model(settings))
changes.append(config.write(settings))
if sources is not None:
    firewall.restrict(settings, sources)
running = service.run(settings, restart_when=changes, sources=sources)
health.verify(settings, process_check=running)
