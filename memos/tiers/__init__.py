"""The memory tiers: plaintext (LanceDB), activation (KV chunks) and parameter (LoRA adapters)."""
