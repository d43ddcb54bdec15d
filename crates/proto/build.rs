//! Compiles `proto/dialtone/v1/*.proto` into the gRPC services and messages, and the file
//! descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos: Vec<PathBuf> = [
        "trunks",
        "numbers",
        "agents",
        "calls",
        "bridge",
        "providers",
        "organizations",
    ]
    .iter()
    .map(|name| root.join(format!("dialtone/v1/{name}.proto")))
    .collect();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("dialtone_v1_descriptor.bin"))
        .compile_protos(&protos, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
