"""memosctl: the command line of memosd, on top of ``memos.client.MemosClient``."""
