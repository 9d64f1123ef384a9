//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh
//! clone builds without a system `protoc`.
//!
//! The descriptor set reflection serves also holds two files vendored from
//! googleapis: `google/rpc/error_details.proto`, so grpcurl can render the
//! error details every non-OK status carries (its Rust types come from
//! tonic-types, not from here), and `google/api/field_behavior.proto`, the
//! `(google.api.field_behavior)` annotations of the CodeOps files, so a
//! client can describe and compile those files from reflection alone.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "codeops/identity/v1/auth.proto",
        "codeops/identity/v1/tenant.proto",
        "codeops/identity/v1/user.proto",
        "codeops/identity/v1/role.proto",
        "codeops/identity/v1/team.proto",
        "codeops/identity/v1/audit.proto",
        "codeops/identity/v1/internal.proto",
        "codeops/planning/v1/planning.proto",
        "codeops/planning/v1/hypothesis.proto",
        "codeops/decision/v1/decision.proto",
        "codeops/decision/v1/comment.proto",
        "codeops/decision/v1/stakeholder.proto",
        "google/rpc/error_details.proto",
        "google/api/field_behavior.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&paths)?;
    let fds = compiler.file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by protox itself: prost's FieldOptions would drop the
    // `(google.api.field_behavior)` extension values on the way through.
    std::fs::write(
        out.join("codeops_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        // google.rpc is described for reflection only: tonic-types already
        // has its Rust types, so none are generated here.
        .extern_path(".google.rpc", "::tonic_types::pb")
        // google.api holds only the field_behavior option: annotations
        // that live in the descriptors, no type any CodeOps message uses.
        // Its generated module (google.api.rs in OUT_DIR) is not included.
        .build_client(true)
        .build_server(true)
        // Secrets (passwords, tokens) must never reach a log line.
        .skip_debug([
            ".codeops.identity.v1.LoginRequest",
            ".codeops.identity.v1.LoginResponse",
            ".codeops.identity.v1.RefreshRequest",
            ".codeops.identity.v1.RefreshResponse",
            ".codeops.identity.v1.LogoutRequest",
            ".codeops.identity.v1.ChangePasswordRequest",
            ".codeops.identity.v1.CreateUserRequest",
            ".codeops.identity.v1.TokenPair",
            ".codeops.identity.v1.CreateTenantRequest",
            ".codeops.identity.v1.CreateTenantResponse",
        ])
        .compile_fds(fds)?;
    Ok(())
}
