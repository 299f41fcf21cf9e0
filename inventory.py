"""An example inventory: where the nodes are, for pyinfra and for the runner.

    pyinfra inventory.py deploy/ts_server.py               # deploy (docs/deploy.md)
    python -m runner job=movie_details cluster=lab         # run a job on the ts_servers group

Copy it, put your own hosts in, and fill in the checksums. Plain Python: a group is a list of
hosts, or a (hosts, group data) tuple; a host is "name" or ("name", host data). Host data
overrides group data. docs/deploy.md lists every key. The addresses below are documentation
examples (203.0.113.0/24), not real servers.
"""

# Every host of the group gets these (a host's own data wins).
_cluster = {
    # --- ts_server release and model: fetched by each host, checked against sha256 AND size.
    # The deploy refuses to download without them. The sha256 of a release is in sha256.txt
    # beside the tarball (https://bellard.org/ts_server/); its size is the Content-Length of
    # the download. The model's page (https://huggingface.co/fbellard/ts_server) shows the
    # SHA256 and the size in bytes of each file.
    "ts_server_version": "2023-07-21",
    "ts_server_sha256": None,  # e.g. "3f5c...": 64 hex digits
    "ts_server_size": None,  # bytes
    "model_name": "llama2_13B_chat",  # the engine id in URLs (conf/model/llama2_13b_chat.yaml)
    "model_file": "llama2_13B_chat_q4.bin",  # 7.64 GB
    "model_sha256": None,
    "model_size": None,
    # Air-gapped hosts: upload copies from this machine instead of downloading.
    # "ts_server_local": "~/artifacts/ts_server_free-2023-07-21.tar.gz",
    # "model_local": "~/artifacts/llama2_13B_chat_q4.bin",
    # --- who may connect to the nodes' port (default: this machine, as each host sees it).
    # "allowed_clients": ["198.51.100.7", "10.0.0.0/24"],
    # --- the open node (deploy/open_node.py) instead: no checksums needed, and its own keys
    # (left unset: the node's defaults; docs/deploy.md, section 6).
    # "n_parallel": 8,  # sequences decoded at once; leave "slots" unset, the runner asks
    # "n_ctx": 2048,  # context per sequence, in tokens
    # "max_queue": 16,  # sequences that may wait beyond the slots; more get 503
    # --- SSH: a non-root user needs sudo for the deploy.
    "ssh_user": "ubuntu",
    "_sudo": True,
}

ts_servers = (
    [
        # name as it appears in reports, and where it is.
        ("node1", {"ssh_hostname": "203.0.113.10", "n_threads": 8, "slots": 2}),
        ("node2", {"ssh_hostname": "203.0.113.11", "n_threads": 8, "slots": 2}),
        # Another port; behind a proxy that wants a key, add "api_key_env": "NODE3_KEY" (the
        # runner sends the variable's value as a Bearer token).
        ("node3", {"ssh_hostname": "203.0.113.12", "node_port": 8090}),
    ],
    _cluster,
)
