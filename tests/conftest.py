"""Session-wide set-up for every test folder."""

from __future__ import annotations

import signal


def pytest_configure() -> None:
    """Let the runners the tests start be stopped with SIGINT, as a user's Ctrl-C would.

    A shell without job control starts a background command (``make test &``, a CI step
    run under ``nohup``) with SIGINT ignored, and an ignored signal stays ignored through
    ``exec``: every runner a test started would then ignore the test's Ctrl-C. A handled
    signal is reset to the default at ``exec``, so handling it here is enough.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
