"""Fixtures for the node's tests: the session-wide real node comes from tests/_realnode.py."""

from __future__ import annotations

from tests._realnode import real_node

__all__ = ["real_node"]
