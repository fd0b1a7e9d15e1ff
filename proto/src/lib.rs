//! containerd-compatible v1 API types and services, generated from our own .proto files.
//!
//! The module tree mirrors the proto packages (`containerd.services.content.v1` is
//! [`containerd::services::content::v1`]), because prost's generated code refers to other
//! packages by relative `super::` paths. Each service module holds the messages plus a
//! `<service>_client` and a `<service>_server` module from tonic.
//!
//! Well-known types (`google.protobuf.*`) are [`prost_types`]; only `google.rpc.Status` is
//! generated here, in [`google::rpc`].
//!
//! # Any type URLs
//!
//! containerd puts the bare full message name in `Any.type_url` (`containerd.events.TaskExit`,
//! no `type.googleapis.com/` prefix, no leading slash). Every generated message implements
//! [`prost::Name`], but prost-build always renders `type_url()` as `"<domain>/<full name>"`, so
//! no domain setting yields the bare form, and [`prost_types::Any::to_msg`] rejects URLs without
//! a `/`. Use [`any_of`] and [`from_any`] for Anys that cross the wire, never
//! `Any::from_msg`/`Any::to_msg`.

use prost::{Message, Name};

/// gRPC metadata key carrying the namespace every request acts in.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// gRPC metadata key carrying the lease that new resources are attached to.
pub const LEASE_HEADER: &str = "containerd-lease";

/// Largest message either side may send or receive; ctr uses 16 MiB both ways, above tonic's
/// 4 MiB default.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Any type URL of an OCI runtime spec carried as JSON (`Container.spec`).
pub const RUNTIME_SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Any type URL of an OCI runtime-spec Process carried as JSON (`ExecProcessRequest.spec`).
pub const RUNTIME_SPEC_PROCESS_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Any type URL of OCI runtime-spec LinuxResources carried as JSON (`UpdateTaskRequest.resources`).
pub const RUNTIME_SPEC_LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Packs `m` into an Any the way containerd does: the type URL is the bare full message name.
pub fn any_of<M: Message + Name>(m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: m.encode_to_vec(),
    }
}

/// Whether `any` holds an `M`, by containerd's bare name or by a `<domain>/<full name>` URL.
pub fn any_is<M: Name>(any: &prost_types::Any) -> bool {
    let full_name = M::full_name();
    match any.type_url.strip_suffix(full_name.as_str()) {
        Some(prefix) => prefix.is_empty() || prefix.ends_with('/'),
        None => false,
    }
}

/// Unpacks an `M` from `any`, accepting the bare name containerd sends as well as the
/// `<domain>/<full name>` form.
pub fn from_any<M: Message + Name + Default>(any: &prost_types::Any) -> berth_core::Result<M> {
    if !any_is::<M>(any) {
        return Err(berth_core::Error::invalid_argument(format!(
            "unpacking any: type url {:?} is not {}",
            any.type_url,
            M::full_name()
        )));
    }
    M::decode(any.value.as_slice()).map_err(|e| {
        berth_core::Error::invalid_argument(format!(
            "unpacking any: decoding {} from {} bytes",
            M::full_name(),
            any.value.len()
        ))
        .with_source(e)
    })
}

/// Packs `m` into a core [`AnyValue`](berth_core::AnyValue) with containerd's bare type URL, for
/// payloads that cross crate boundaries as domain values (event payloads, container specs).
pub fn any_value_of<M: Message + Name>(m: &M) -> berth_core::AnyValue {
    berth_core::AnyValue::new(M::full_name(), m.encode_to_vec())
}

/// A wire Any as a core [`AnyValue`](berth_core::AnyValue), unchanged.
pub fn to_any_value(any: prost_types::Any) -> berth_core::AnyValue {
    berth_core::AnyValue::new(any.type_url, any.value)
}

/// A core [`AnyValue`](berth_core::AnyValue) as a wire Any, unchanged.
pub fn to_wire_any(value: &berth_core::AnyValue) -> prost_types::Any {
    prost_types::Any {
        type_url: value.type_url.clone(),
        value: value.value.clone(),
    }
}

/// Declares a module holding the code generated for one proto package.
macro_rules! generated {
    ($(#[$doc:meta])* $name:ident => $package:literal) => {
        $(#[$doc])*
        #[allow(missing_docs, clippy::all)]
        pub mod $name {
            tonic::include_proto!($package);
        }
    };
}

/// containerd's API, under its proto package names.
pub mod containerd {
    generated! {
        /// `containerd.types`: Mount, Descriptor, Platform, Metric.
        types => "containerd.types"
    }

    /// `containerd.v1.*`.
    pub mod v1 {
        generated! {
            /// `containerd.v1.types`: Process, ProcessInfo and the task Status enum.
            types => "containerd.v1.types"
        }
    }

    generated! {
        /// `containerd.events`: payloads published on the event bus (image events live in
        /// [`services::images::v1`]).
        events => "containerd.events"
    }

    /// containerd's gRPC services, one package each.
    pub mod services {
        /// Content store service.
        pub mod content {
            generated! {
                /// `containerd.services.content.v1`.
                v1 => "containerd.services.content.v1"
            }
        }

        /// Snapshots service.
        pub mod snapshots {
            generated! {
                /// `containerd.services.snapshots.v1`.
                v1 => "containerd.services.snapshots.v1"
            }
        }

        /// Images service.
        pub mod images {
            generated! {
                /// `containerd.services.images.v1`, including the ImageCreate/Update/Delete events.
                v1 => "containerd.services.images.v1"
            }
        }

        /// Containers service.
        pub mod containers {
            generated! {
                /// `containerd.services.containers.v1`.
                v1 => "containerd.services.containers.v1"
            }
        }

        /// Tasks service.
        pub mod tasks {
            generated! {
                /// `containerd.services.tasks.v1`.
                v1 => "containerd.services.tasks.v1"
            }
        }

        /// Leases service.
        pub mod leases {
            generated! {
                /// `containerd.services.leases.v1`.
                v1 => "containerd.services.leases.v1"
            }
        }

        /// Namespaces service.
        pub mod namespaces {
            generated! {
                /// `containerd.services.namespaces.v1`.
                v1 => "containerd.services.namespaces.v1"
            }
        }

        /// Diff service.
        pub mod diff {
            generated! {
                /// `containerd.services.diff.v1`.
                v1 => "containerd.services.diff.v1"
            }
        }

        /// Events service.
        pub mod events {
            generated! {
                /// `containerd.services.events.v1`.
                v1 => "containerd.services.events.v1"
            }
        }

        /// Introspection service.
        pub mod introspection {
            generated! {
                /// `containerd.services.introspection.v1`.
                v1 => "containerd.services.introspection.v1"
            }
        }

        /// Version service.
        pub mod version {
            generated! {
                /// `containerd.services.version.v1`.
                v1 => "containerd.services.version.v1"
            }
        }
    }
}

/// The standard gRPC packages.
pub mod grpc {
    /// gRPC health checking.
    pub mod health {
        generated! {
            /// `grpc.health.v1`: the Health service.
            v1 => "grpc.health.v1"
        }
    }
}

/// Google API packages that containerd's messages embed.
pub mod google {
    generated! {
        /// `google.rpc`: Status, used by `Plugin.init_err`.
        rpc => "google.rpc"
    }
}

/// Berth's own services, beside containerd's.
pub mod berth {
    /// Berth-only services.
    pub mod services {
        /// Administration service.
        pub mod admin {
            generated! {
                /// `berth.services.admin.v1`: on-demand garbage collection.
                v1 => "berth.services.admin.v1"
            }
        }

        /// Logs service.
        pub mod logs {
            generated! {
                /// `berth.services.logs.v1`: containers' logged stdout and stderr.
                v1 => "berth.services.logs.v1"
            }
        }

        /// Transfer service.
        pub mod transfer {
            generated! {
                /// `berth.services.transfer.v1`: daemon-side pull and push with streamed progress.
                v1 => "berth.services.transfer.v1"
            }
        }
    }
}
