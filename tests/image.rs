//! `dye image build`: the archive is an OCI image layout whose index names the image the
//! DaemonSet runs, whose config's entrypoint is `dye agent`, and whose one layer holds the dye
//! binary and every library `ldd` (run here, independently) says it links — enough that the
//! binary runs from the layer alone (chroot, root).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

const DYE: &str = env!("CARGO_BIN_EXE_dye");

/// The archive's entries by name.
fn entries(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in tar::Archive::new(tar_bytes).entries().expect("tar") {
        let mut e = e.expect("tar entry");
        let name = e.path().expect("entry path").display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        out.insert(name, data);
    }
    out
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest}"));
    let actual: String =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(data))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    assert_eq!(actual, hex, "blob content matches its digest");
    data
}

fn json(data: &[u8]) -> serde_json::Value {
    serde_json::from_slice(data).expect("JSON")
}

/// The libraries ldd lists for `bin`, as paths without the leading '/'.
fn ldd(bin: &str) -> Vec<String> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let target = l.split("=>").last()?.trim();
            let path = target.split(" (").next()?.trim();
            path.starts_with('/')
                .then(|| path.trim_start_matches('/').to_string())
        })
        .collect()
}

#[test]
fn image_is_an_oci_layout_with_dye_its_libraries_and_the_agent_entrypoint() {
    let dir = std::env::temp_dir().join(format!("dye-image-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("image.tar");
    let built = Command::new(DYE)
        .args(["image", "build"])
        .arg(&out)
        .output()
        .expect("run dye image build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let archive = std::fs::read(&out).unwrap();
    let files = entries(&archive);

    assert!(files.contains_key("oci-layout"));
    let index = json(&files["index.json"]);
    let desc = &index["manifests"][0];
    let reference = dye_tracer::image::reference();
    assert_eq!(
        desc["annotations"]["io.containerd.image.name"],
        reference.as_str()
    );
    let manifest = json(blob(&files, desc["digest"].as_str().unwrap()));
    let config = json(blob(&files, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/dye", "agent"])
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer_bytes = blob(&files, layers[0]["digest"].as_str().unwrap());
    assert_eq!(
        config["rootfs"]["diff_ids"][0], layers[0]["digest"],
        "uncompressed layer: diff id = digest"
    );
    let layer = entries(layer_bytes);
    assert_eq!(
        layer["usr/local/bin/dye"],
        std::fs::read(DYE).unwrap(),
        "the binary that built it"
    );
    let libs = ldd(DYE);
    assert!(
        libs.iter().any(|l| l.contains("libpcap")),
        "dye links libpcap: {libs:?}"
    );
    for lib in &libs {
        assert!(layer.contains_key(lib), "layer holds {lib}");
    }
    let regular = layer.keys().filter(|k| !k.ends_with('/')).count();
    assert_eq!(
        regular,
        libs.len() + 1,
        "the binary and its libraries, nothing else"
    );

    // The layer alone runs dye: unpack it and run it chrooted (no host library reachable).
    let root = dir.join("rootfs");
    tar::Archive::new(layer_bytes).unpack(&root).unwrap();
    let ran = Command::new("chroot")
        .arg(&root)
        .args(["/usr/local/bin/dye", "--version"])
        .output()
        .expect("chroot");
    let host = Command::new(DYE).arg("--version").output().unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(ran.stdout, host.stdout);
    assert!(String::from_utf8_lossy(&ran.stdout).starts_with("dye "));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!Path::new(&dir).exists());
}
