//! Compiles dye's eBPF program (capture/bpf/kfree_skb.bpf.c) with clang, so the object loaded
//! at run time is always the one the repository's source makes. Needs clang and libbpf-dev's
//! headers (scripts/setup.sh installs both).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/kfree_skb.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("kfree_skb.bpf.o");
    // <linux/bpf.h> pulls <asm/types.h>, which Debian keeps under the multiarch directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("set by cargo");
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new("clang")
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        // Reproducible: no build directory in the object's debug info.
        .arg(format!("-fdebug-prefix-map={}=.", manifest.display()))
        .arg("-c")
        .arg(manifest.join(src))
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile {src} ({s}); see its messages above"),
        Err(e) => panic!(
            "cannot run clang to compile {src}: {e} (install it with scripts/setup.sh: clang, libbpf-dev)"
        ),
    }
}
