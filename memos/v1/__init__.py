"""Generated protobuf and gRPC code for the memos.v1 API (`make proto`; do not edit by hand)."""
