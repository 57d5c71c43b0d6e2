//! The image deploy/daemonset.yaml runs, built from this `dye` binary without a registry or
//! a base image: one layer holding `/usr/local/bin/dye` and exactly the shared libraries it
//! links (as the dynamic loader resolves them here, `ldd`), entrypoint `dye agent`.

pub mod oci;

use std::path::{Path, PathBuf};

/// Where the binary sits in the image (on the image's PATH, for `kubectl exec … -- dye`).
pub const BINARY: &str = "/usr/local/bin/dye";

/// The image's name: `dye.local/dye:VERSION` (`dye.local` is no registry: it is imported).
pub fn reference() -> String {
    format!("dye.local/dye:{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ldd {binary}: {reason}")]
    Ldd { binary: String, reason: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// The libraries `binary` loads, as absolute paths, loader included; none for a static binary.
pub fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io("run ldd (package libc-bin)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd says "not a dynamic executable" (exit 1) for a static binary.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(ImageError::Ldd {
            binary: binary.display().to_string(),
            reason: err.trim().to_string(),
        });
    }
    parse_ldd(&text).map_err(|reason| ImageError::Ldd {
        binary: binary.display().to_string(),
        reason,
    })
}

/// Lines `name => /path (0x…)`, `/path (0x…)` (the loader), `linux-vdso.so.1 (0x…)` (in the
/// kernel, no file), `statically linked`; `name => not found` is an error.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// The image archive for `binary`.
pub fn build(binary: &Path) -> Result<Vec<u8>, ImageError> {
    let mut files = vec![oci::File {
        path: BINARY.into(),
        data: std::fs::read(binary).map_err(io(format!("read {}", binary.display())))?,
        mode: 0o755,
    }];
    for lib in linked_libraries(binary)? {
        // The file's contents under the name the loader asks for (symlinks followed).
        files.push(oci::File {
            path: lib.display().to_string(),
            data: std::fs::read(&lib).map_err(io(format!("read {}", lib.display())))?,
            mode: 0o755,
        });
    }
    let layer = oci::layer(&files).map_err(io("build the image layer"))?;
    oci::archive(
        &layer,
        &oci::Config {
            reference: reference(),
            entrypoint: vec![BINARY.into(), "agent".into()],
            env: vec!["PATH=/usr/local/bin".into()],
        },
    )
    .map_err(io("build the image archive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_files_and_skips_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibpcap.so.0.8 => /lib/x86_64-linux-gnu/libpcap.so.0.8 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libpcap.so.0.8",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibgone.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }
}
