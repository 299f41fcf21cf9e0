"""How nodes come to exist: pyinfra deploys for TextSynth-API nodes.

Entry files (run from the repository root)::

    pyinfra inventory.py deploy/ts_server.py    # Bellard's ts_server + a model
    pyinfra inventory.py deploy/open_node.py    # our open node (llama.cpp) from a wheelhouse

Layout: ``settings`` (with ``artifacts``) turns host data into typed settings (pure, no
pyinfra); ``facts`` and ``operations/`` are the custom pyinfra pieces; ``tasks/`` groups the
operations by role; ``templates/`` holds the config, service and firewall templates.

Helpers that are not deploys: ``python -m deploy.wheelhouse`` builds the open node's
wheelhouse, ``python -m deploy.migrate`` turns the old tool's Ansible INI into an
``inventory.py``. See ``docs/deploy.md``.
"""
