// Generates the gRPC server code from the repository's proto, with the descriptor set that
// reflection serves. protoc comes with the build (protoc-bin-vendored), so a fresh machine
// needs nothing installed; `PROTOC` names another one, and a platform the vendored binaries
// do not cover uses the `protoc` on the PATH.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_root.join("merchant_monitor/gateway/v1/gateway.proto");
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("gateway_descriptor.bin");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    let mut includes = vec![proto_root];
    if std::env::var_os("PROTOC").is_none()
        && let Ok(vendored) = protoc_bin_vendored::protoc_bin_path()
    {
        config.protoc_executable(vendored);
        // The well-known types (google/protobuf/*.proto) that come with it.
        includes.extend(protoc_bin_vendored::include_path().ok());
    }
    tonic_prost_build::configure()
        .build_client(false)
        .file_descriptor_set_path(&descriptor)
        .compile_with_config(config, &[proto], &includes)?;
    Ok(())
}
