//! Thin gRPC adapters from the containerd v1 API to berth-core traits.
