"""Run large batches of templated prompts over a cluster of TextSynth-API nodes."""
