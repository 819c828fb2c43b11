"""The parameter tier: LoRA adapters as versioned, content-addressed MemCubes.

``store`` keeps them (validated by ``validate`` against a ``fingerprint`` of the base
model), ``merge`` fuses them, ``train`` distils memories into one, ``slots`` decides which
are loaded in an engine, and ``tier`` puts it all behind one in-process API.
"""
