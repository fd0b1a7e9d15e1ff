//! containerd-compatible v1 API types and services, generated from our own .proto files.
