"""An open node that speaks ts_server's TextSynth REST API over llama.cpp.

Run it with ``python -m runner.node CONFIG [--api-key-env NAME]``; see ``docs/node.md``.
Importing this package does not import llama.cpp: the config and model-file helpers work
without the ``node`` extra.
"""

from __future__ import annotations

from ._cfg import ModelSpec, ServeConfig, load_config
from ._model_file import SMOLLM2_ALIAS, default_model_path

__all__ = ["SMOLLM2_ALIAS", "ModelSpec", "ServeConfig", "default_model_path", "load_config"]
