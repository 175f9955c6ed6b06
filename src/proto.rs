//! Code generated from `proto/warden/v1` by `build.rs`.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("warden.v1");
}

/// The binary FileDescriptorSet of every warden proto, imports included:
/// what reflection serves and `warden descriptor-set` prints.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/warden_descriptor.bin"));
