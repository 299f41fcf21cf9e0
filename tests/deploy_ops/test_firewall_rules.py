"""The allow-list rules: the same lines for the live chain and the script run at boot."""

from __future__ import annotations

from deploy.operations.firewall import allowlist_rules, restore_lines, restore_script


def test_rules_accept_loopback_and_sources_then_reset_the_rest() -> None:
    assert allowlist_rules("n-in", ["10.0.0.1/32", "10.1.0.0/16"]) == [
        "-A n-in -i lo -j ACCEPT",
        "-A n-in -s 10.0.0.1/32 -j ACCEPT",
        "-A n-in -s 10.1.0.0/16 -j ACCEPT",
        "-A n-in -p tcp -j REJECT --reject-with tcp-reset",
    ]


def test_restore_declares_flushes_and_commits_in_one_transaction() -> None:
    lines = restore_lines("n-in", 8088, ["10.0.0.1/32"], hook=True)
    assert lines[:3] == ["*filter", ":n-in - [0:0]", "-F n-in"]
    assert lines[-2:] == ["-I INPUT -p tcp -m tcp --dport 8088 -j n-in", "COMMIT"]
    assert "-I INPUT" not in " ".join(restore_lines("n-in", 8088, [], hook=False))


def test_boot_script_hooks_the_chain_only_once() -> None:
    script = restore_script("n-in", 8088, ["10.0.0.1/32"])
    first, second = script.strip().splitlines()
    assert first.endswith("| iptables-restore -w --noflush")
    assert "'-A n-in -s 10.0.0.1/32 -j ACCEPT'" in first
    assert second.startswith("iptables -w -C INPUT -p tcp --dport 8088 -j n-in 2>/dev/null || ")
