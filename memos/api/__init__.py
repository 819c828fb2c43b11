"""The gRPC layer: servicers that translate to the kernel, auth, and code generation."""
