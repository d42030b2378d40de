//! Compiles `proto/` with the pure-Rust `protox` compiler (no `protoc` needed)
//! and hands the descriptors to `prost-build`.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "comptoir/wire.proto",
    "comptoir/content.proto",
    "comptoir/storage.proto",
    "comptoir/relay.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    let descriptors = protox::compile(PROTO_FILES, [&proto_root])?;
    prost_build::Config::new()
        // Stored records hold secrets: their Debug is written by hand in
        // src/proto.rs and prints no key bytes.
        // So do the content (its franking key) and a report.
        .skip_debug([
            ".comptoir.storage",
            ".comptoir.content.Content",
            ".comptoir.wire.ReportContents",
        ])
        // The content's body holds no secret: its Debug stays derived.
        .enum_attribute(".comptoir.content.Content.body", "#[derive(Debug)]")
        // Interactive messages travel in client events, which compare
        // with `Eq`; they hold no floats. (Prost derives it itself for the
        // others; the path also covers the nested oneof.)
        .type_attribute(".comptoir.content.Interactive", "#[derive(Eq)]")
        .type_attribute(".comptoir.content.ListMessage", "#[derive(Eq)]")
        .type_attribute(".comptoir.content.ListSection", "#[derive(Eq)]")
        .compile_fds(descriptors)?;
    Ok(())
}
