// Generates the gRPC server code from the repository's proto, with the descriptor set that
// reflection serves. Needs `protoc` (Debian: protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_root.join("merchant_monitor/gateway/v1/gateway.proto");
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("gateway_descriptor.bin");
    println!("cargo:rerun-if-changed={}", proto.display());
    tonic_prost_build::configure()
        .build_client(false)
        .file_descriptor_set_path(&descriptor)
        .compile_protos(&[proto], &[proto_root])?;
    Ok(())
}
