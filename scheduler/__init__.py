"""Learning-augmented paging: policies, one-bit predictors and a trace simulator.

Pure: imports nothing of ``memos``, gRPC, Redis or models (numpy at most).
"""
