"""memos: a memory operating system daemon for LLM serving stacks."""

__version__ = "0.1.0"
