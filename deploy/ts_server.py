"""Deploy Fabrice Bellard's ts_server and a model to the inventory's hosts.

    pyinfra inventory.py deploy/ts_server.py          # from the repository root
    pyinfra inventory.py deploy/ts_server.py --dry    # show what would change

The tarball and the model are downloaded on each host and checked against the sha256 and size
in the inventory (or uploaded with ts_server_local / model_local). See docs/deploy.md.
"""

from deploy.settings import Role
from deploy.tasks import artifacts, config, firewall, health, host_settings, service, system

settings = host_settings.for_host(Role.ts_server)
sources = firewall.allowed_sources(settings) if settings.firewall else None

system.prepare(settings)
program = artifacts.ts_server(settings)
model = artifacts.model(settings)
cfg = config.write(settings)
if sources is not None:
    firewall.restrict(settings, sources)
running = service.run(settings, restart_when=[program, model, cfg], sources=sources)
health.verify(settings, process_check=running)
