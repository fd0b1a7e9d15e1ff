//! Namespaced metadata in redb: namespaces, content records, leases and garbage collection.
