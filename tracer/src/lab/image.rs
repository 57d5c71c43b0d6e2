//! The pod sandbox ("pause") image, built locally because the lab uses no registry: a
//! single-layer OCI image archive whose one layer holds busybox-static's `/bin/busybox`, with
//! the entrypoint `busybox sleep infinity` — a process that holds the pod's namespaces and does
//! nothing else, like Kubernetes' pause. The archive is deterministic (fixed mtimes), so every
//! build has the same digest.

use std::path::Path;

use crate::image::oci;

use super::cmd::Cmd;
use super::LabError;

/// The image reference the lab's containerd uses as CRI `sandbox_image`.
pub const SANDBOX_IMAGE: &str = "dye.local/pause:1";

/// The static busybox installed by Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes the OCI image archive (`oci-layout`, `index.json`, `blobs/sha256/…`) to `path`.
pub fn write_archive(path: &Path) -> Result<(), LabError> {
    let busybox = std::fs::read(BUSYBOX).map_err(|e| LabError::io(format!("read {BUSYBOX}"), e))?;
    if !is_static_elf(&busybox) {
        return Err(LabError::MissingTool {
            tool: format!("a statically linked {BUSYBOX} (this one needs a dynamic loader)"),
            package: "busybox-static",
        });
    }
    let layer = layer_tar(&busybox).map_err(|e| LabError::io("build the image layer", e))?;
    let archive = oci_archive(&layer).map_err(|e| LabError::io("build the image archive", e))?;
    std::fs::write(path, archive).map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

/// Loads the archive into containerd's `k8s.io` namespace (the one CRI uses). This is the only
/// use of `ctr`, once per node at `up`, standing in for an image pull from a registry; pods
/// themselves are made over CRI.
pub fn import(socket: &Path, archive: &Path) -> Result<(), LabError> {
    Cmd::new([
        "ctr".to_string(),
        "--address".into(),
        socket.display().to_string(),
        "--namespace".into(),
        "k8s.io".into(),
        "images".into(),
        "import".into(),
        archive.display().to_string(),
    ])
    .run()
    .map(drop)
}

/// True when `elf` is an ELF executable without a PT_INTERP program header (no dynamic
/// loader: it runs in an image that holds nothing else).
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false; // only 64-bit little-endian is expected here
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        u32_at(at).is_some_and(|ty| ty != PT_INTERP)
    })
}

/// The layer: `bin/busybox`, uncompressed.
fn layer_tar(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    oci::layer(&[oci::File {
        path: BUSYBOX.into(),
        data: busybox.to_vec(),
        mode: 0o755,
    }])
}

/// The OCI image layout around `layer`, as a tar archive `ctr images import` reads.
fn oci_archive(layer: &[u8]) -> std::io::Result<Vec<u8>> {
    oci::archive(
        layer,
        &oci::Config {
            reference: SANDBOX_IMAGE.into(),
            entrypoint: vec![BUSYBOX.into(), "sleep".into(), "infinity".into()],
            env: Vec::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_a_deterministic_oci_layout_naming_the_sandbox_image() {
        let layer = layer_tar(b"not really busybox").unwrap();
        let a = oci_archive(&layer).unwrap();
        assert_eq!(a, oci_archive(&layer).unwrap());
        let mut names = Vec::new();
        let mut index = String::new();
        for entry in tar::Archive::new(&a[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "index.json" {
                std::io::Read::read_to_string(&mut entry, &mut index).unwrap();
            }
            names.push(name);
        }
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(names.contains(&format!("blobs/sha256/{}", oci::sha256_hex(&layer))));
        assert!(index.contains(SANDBOX_IMAGE), "{index}");
    }

    #[test]
    fn static_elf_is_told_from_dynamic_and_from_garbage() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&[]));
        // /bin/sh is dynamically linked on Debian.
        if let Ok(sh) = std::fs::read("/bin/sh") {
            assert!(!is_static_elf(&sh));
        }
        // Only busybox-static's busybox must be static (Debian's plain busybox is not).
        if Path::new("/usr/share/doc/busybox-static").is_dir() {
            let bb = std::fs::read(BUSYBOX).unwrap();
            assert!(
                is_static_elf(&bb),
                "{BUSYBOX} from busybox-static is static"
            );
        }
    }
}
