"""The sampling parameters of a job's requests: the model's defaults, overridden by the job."""

from __future__ import annotations

from typing import Any

from ._config import JobConfig, ModelConfig


def sampling_params(model: ModelConfig, job: JobConfig) -> dict[str, Any]:
    """The sampling parameters sent with every request of a job (job values win)."""
    params: dict[str, Any] = {
        "max_tokens": job.max_tokens if job.max_tokens is not None else model.max_tokens,
        "temperature": job.temperature if job.temperature is not None else model.temperature,
        "top_k": model.top_k,
        "top_p": model.top_p,
        "repetition_penalty": model.repetition_penalty,
    }
    stop = job.stop if job.stop is not None else model.stop
    if stop:
        params["stop"] = list(stop)
    if job.candidates > 1:  # absent for 1, so the resume keys of one-answer jobs stay as they were
        params["n"] = job.candidates
    return {k: v for k, v in params.items() if v is not None}
