"""The package's public names: sorted, all importable, nothing private."""

from __future__ import annotations

import runner


def test_all_is_sorted_and_every_name_exists() -> None:
    assert runner.__all__ == sorted(runner.__all__)
    for name in runner.__all__:
        assert not name.startswith("_")
        assert getattr(runner, name) is not None


def test_every_public_member_is_listed() -> None:
    public = {
        name
        for name, value in vars(runner).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("runner.")
    }
    assert public == set(runner.__all__)
