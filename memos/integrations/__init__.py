"""Code that runs inside a serving engine's process and talks to memosd over gRPC.

Each engine's integration imports the engine lazily: the daemon never needs it installed.
"""
