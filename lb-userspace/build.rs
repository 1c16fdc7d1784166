//! Builds the XDP program (`lb-ebpf`) with the nightly toolchain and bpf-linker, and leaves
//! the object in `OUT_DIR/lb-ebpf` for `include_bytes_aligned!`. `cargo xtask` installs the
//! toolchain pieces first; see README.md.
fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "lb-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf"),
        no_default_features: false,
        features: &[],
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
