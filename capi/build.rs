//! Gives the shared library a versioned soname, so programs linked with `-lseglog` record a
//! dependency on `libseglog.so.0` (the C ABI's major version) and a package can ship
//! `libseglog.so.0` with the `libseglog.so` development symlink beside it.
fn main() {
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,-soname,libseglog.so.{}",
        ABI_MAJOR
    );
    println!("cargo:rerun-if-changed=build.rs");
}

/// The C ABI's major version: bumped when `include/seglog.h` changes incompatibly.
const ABI_MAJOR: u32 = 0;
