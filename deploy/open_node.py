"""Deploy the open node (python -m runner.node, llama.cpp's server engine) to the hosts.

    python -m deploy.wheelhouse                      # once: the wheels a node needs
    pyinfra inventory.py deploy/open_node.py         # from the repository root

Each host gets a venv filled from the uploaded wheelhouse — llama.cpp as xllamacpp's prebuilt
wheel: no compiler, no build packages, no package index, no system-wide pip — and the same
ts_server.cfg (plus n_parallel, n_ctx and max_queue when set), service, firewall and check as
ts_server. One node process per host serves all its cores. See docs/deploy.md.
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
