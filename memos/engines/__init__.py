"""Engine adapters: where KV caches and adapters come from (``hf``: transformers, in-process)."""
