"""Rollout engines (``rollout.engine``): vLLM in-process (``vllm``), transformers generate (``hf``)."""
