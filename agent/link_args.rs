// Link arguments of the r8s-agent and r8s-server binaries, included by agent/build.rs and
// control-plane/build.rs.
//
// `-z pack-relative-relocs` (DT_RELR) stores the relative relocations of a PIE as a bitmap:
// the agent's relocation tables go from 1.65 MB to 27 KB (the server's from 1.96 MB). The
// dynamic loader reads all of them at start, so they stayed resident for the life of the process
// (docs/benchmarks.md, "Memory"). glibc applies DT_RELR from 2.36 on (Debian 12), and the
// linker marks such binaries with the GLIBC_ABI_DT_RELR version, which an older glibc
// refuses at start: the flag is passed only when building for this host and its glibc is
// 2.36 or newer.
fn link_args(this_file: &str) {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={this_file}");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("HOST") != var("TARGET")
    {
        return;
    }
    if host_glibc().is_some_and(|v| v >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The host's glibc version, from the first line of `ldd --version` ("ldd (Debian GLIBC
/// 2.36-9+deb12u14) 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let out = std::process::Command::new("ldd")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next()?.split_whitespace().last()?;
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
