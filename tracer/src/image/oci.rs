//! An OCI image layout written as one tar archive (what `ctr images import` reads): one
//! uncompressed layer, a config with the entrypoint, a manifest and an index naming the image.
//! Deterministic (fixed mtimes, owners, entry order), so the same files give the same digest.

use std::collections::BTreeSet;
use std::io::Write;

use sha2::{Digest, Sha256};

/// A file in the layer: absolute path in the image, contents, mode.
#[derive(Debug, Clone)]
pub struct File {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// What the image runs and names itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// `registry/name:tag`, recorded as `io.containerd.image.name`.
    pub reference: String,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
}

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h.set_cksum();
    Ok(h)
}

/// The layer tar: every file, and every directory above one (mode 0755), sorted by path.
pub fn layer(files: &[File]) -> std::io::Result<Vec<u8>> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let rel = f.path.trim_start_matches('/');
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            at += i + 1;
            dirs.insert(rel[..at].to_string());
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    for d in &dirs {
        b.append(&header(d, 0, 0o755, tar::EntryType::Directory)?, &[][..])?;
    }
    let mut sorted: Vec<&File> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for f in sorted {
        let rel = f.path.trim_start_matches('/');
        b.append(
            &header(rel, f.data.len() as u64, f.mode, tar::EntryType::Regular)?,
            &f.data[..],
        )?;
    }
    b.into_inner()
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The OCI architecture name of this build.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The OCI image layout around `layer`, as a tar archive.
pub fn archive(layer: &[u8], config: &Config) -> std::io::Result<Vec<u8>> {
    let layer_digest = sha256_hex(layer);
    let image_config = serde_json::json!({
        "architecture": architecture(),
        "os": "linux",
        "config": { "Entrypoint": config.entrypoint, "Env": config.env },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
    })
    .to_string();
    let config_digest = sha256_hex(image_config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": image_config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    })
    .to_string();
    let manifest_digest = sha256_hex(manifest.as_bytes());
    let tag = config.reference.rsplit(':').next().unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": config.reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    })
    .to_string();

    let mut b = tar::Builder::new(Vec::new());
    let mut file = |name: &str, data: &[u8]| -> std::io::Result<()> {
        b.append(
            &header(name, data.len() as u64, 0o644, tar::EntryType::Regular)?,
            data,
        )
    };
    file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file(&format!("blobs/sha256/{layer_digest}"), layer)?;
    file(
        &format!("blobs/sha256/{config_digest}"),
        image_config.as_bytes(),
    )?;
    file(
        &format!("blobs/sha256/{manifest_digest}"),
        manifest.as_bytes(),
    )?;
    file("index.json", index.as_bytes())?;
    let mut out = b.into_inner()?;
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_holds_parent_directories_then_files_sorted() {
        let files = [
            File {
                path: "/usr/local/bin/x".into(),
                data: b"x".to_vec(),
                mode: 0o755,
            },
            File {
                path: "/lib/a.so".into(),
                data: b"a".to_vec(),
                mode: 0o644,
            },
        ];
        let l = layer(&files).unwrap();
        assert_eq!(l, layer(&files).unwrap(), "deterministic");
        let names: Vec<String> = tar::Archive::new(&l[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "lib/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "lib/a.so",
                "usr/local/bin/x"
            ]
        );
    }
}
