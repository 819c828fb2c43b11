"""Paging policies, one module per family."""
