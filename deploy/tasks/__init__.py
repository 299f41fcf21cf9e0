"""The node deploys' tasks, by role: each module is one step, a ``@deploy`` function.

``host_settings`` reads the host's data; ``system`` prepares the host (packages, user,
folders); ``artifacts`` brings ts_server and its model; ``venv`` installs the open node from a
wheelhouse; ``config`` writes ts_server.cfg; ``firewall`` limits who reaches the port;
``service`` runs the node (systemd, or a supervisor where there is none); ``health`` checks
that it answers.
"""
