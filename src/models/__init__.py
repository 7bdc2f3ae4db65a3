"""Models and tokenizers: the tiny model built from config, local HF folders, SmolLM2 from its GGUF."""
