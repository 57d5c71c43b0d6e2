//! flannel's `udp` backend, the lab side (`[overlay] backend = "udp"`): on every node a
//! forwarder process (`dye lab forward`, see `udp_forwarder`) creates the `flannel0` TUN
//! device; the lab then gives it the overlay MTU and the node's pod-subnet address with the
//! cluster prefix — which routes the whole cluster range into the TUN, as flanneld does —
//! while the node's own pod subnet stays on cni0 (the longer prefix).
//!
//! Each forwarder is recorded in the lab state (like the responders) as soon as it runs; `down`
//! stops it, and it stops by itself when the lab's state directory goes. Its TUN device is not
//! persistent: when the process ends, the kernel removes flannel0 and its routes.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cmd::spawn_daemon;
use super::cmd::Cmd;
use super::faults::Fault;
use super::names::LabId;
use super::state::LabState;
use super::topology::{Backend, Node, Topology};
use super::LabError;

/// Outer IPv4 20 + UDP 8: what the udp backend adds to an inner packet.
pub const UDP_OVERHEAD: u32 = 28;

/// The udp backend's own rules: IPv4 only, an interface name the kernel accepts, an overlay
/// MTU that fits the underlay once wrapped.
pub fn check(topo: &Topology) -> Result<(), String> {
    if topo.overlay.backend != Backend::Udp {
        return Ok(());
    }
    if topo.dual_stack() {
        return Err(
            "[overlay] backend = \"udp\" is IPv4-only (as flannel's was): remove the *6 keys"
                .into(),
        );
    }
    let dev = &topo.overlay.device;
    if dev.is_empty() || dev.len() > 15 || dev.contains(['/', ' ']) {
        return Err(format!(
            "[overlay] device {dev:?}: an interface name is 1-15 characters, no '/' or spaces"
        ));
    }
    if topo.overlay.mtu + UDP_OVERHEAD > topo.underlay.mtu {
        return Err(format!(
            "[overlay] mtu {} + {UDP_OVERHEAD} (outer IPv4 + UDP) exceeds the underlay mtu {}",
            topo.overlay.mtu, topo.underlay.mtu
        ));
    }
    Ok(())
}

/// Faults that only a VXLAN overlay has: refused on the udp backend, saying why.
pub fn check_fault(topo: &Topology, fault: &Fault) -> Result<(), String> {
    if topo.overlay.backend != Backend::Udp {
        return Ok(());
    }
    match fault {
        Fault::VxlanDf { .. } => Err(format!(
            "vxlan-df needs a VXLAN overlay; {} is flannel's udp backend (a TUN device)",
            topo.overlay.device
        )),
        Fault::NoRoute { .. } => Err(format!(
            "no-route deletes a per-node VXLAN route; the udp backend routes the whole cluster \
             range into {} (the forwarder picks the node)",
            topo.overlay.device
        )),
        _ => Ok(()),
    }
}

fn ready_file(state_dir: &Path, node: &str) -> std::path::PathBuf {
    state_dir.join(format!("forwarder-{node}.ready"))
}

/// Starts every node's forwarder, waits for its device, then configures the device. Checks
/// `interrupted` between steps.
pub fn install(
    id: &LabId,
    topo: &Topology,
    state: &mut LabState,
    state_dir: &Path,
    interrupted: &dyn Fn() -> Result<(), LabError>,
) -> Result<(), LabError> {
    for node in &topo.nodes {
        interrupted()?;
        let init = state.runtime(node.name.get_ref()).and_then(|r| r.init_pid);
        let pid = spawn(id, topo, node, state_dir, init)?;
        state.forwarders.push(pid);
        state.save(state_dir)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in &topo.nodes {
        let name = node.name.get_ref();
        while !ready_file(state_dir, name).exists() {
            interrupted()?;
            if Instant::now() > deadline {
                return Err(LabError::Internal(format!(
                    "the udp forwarder of {name} did not start within 10 s (log: {})",
                    state_dir.join(format!("forwarder-{name}.log")).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ns = id.ns(name);
        let dev = &topo.overlay.device;
        let addr = format!(
            "{}/{}",
            node.pod_subnet.get_ref().network(),
            topo.overlay.cluster_cidr.prefix_len()
        );
        Cmd::ip(&ns, &format!("link set {dev} mtu {} up", topo.overlay.mtu)).run()?;
        Cmd::ip(&ns, &format!("addr add {addr} dev {dev}")).run()?;
    }
    Ok(())
}

/// `dye lab forward …` in the node (its network namespace; on an isolated node, the node
/// whole, as flanneld runs there), a lab daemon ([`spawn_daemon`]) with a log file.
fn spawn(
    id: &LabId,
    topo: &Topology,
    node: &Node,
    state_dir: &Path,
    init: Option<u32>,
) -> Result<u32, LabError> {
    let name = node.name.get_ref();
    let exe = std::env::current_exe().map_err(|e| LabError::io("locate the dye binary", e))?;
    let log_path = state_dir.join(format!("forwarder-{name}.log"));
    let ns = id.ns(name);
    let mut cmd = super::node_host::in_netns(init, &ns);
    cmd.arg(exe)
        .args(["lab", "forward", "--tun", topo.overlay.device.as_str()])
        .args(["--local", &node.address.get_ref().to_string()])
        .args(["--port", &topo.overlay.port.to_string()])
        .arg("--ready")
        .arg(ready_file(state_dir, name))
        .arg("--watch")
        .arg(state_dir);
    for peer in topo.nodes.iter().filter(|p| p.name.get_ref() != name) {
        cmd.arg("--peer").arg(format!(
            "{}={}",
            peer.pod_subnet.get_ref(),
            peer.address.get_ref()
        ));
    }
    cmd.env("RUST_LOG", "info");
    spawn_daemon(&mut cmd, &log_path, &format!("udp forwarder in {ns}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../samples/lab/flannel-udp.toml");

    #[test]
    fn sample_parses_as_udp_backend() {
        let t = Topology::parse(SAMPLE).unwrap();
        assert_eq!(t.overlay.backend, Backend::Udp);
        assert_eq!(t.overlay.device, "flannel0");
        assert_eq!(t.overlay.mtu + UDP_OVERHEAD, t.underlay.mtu);
        // The default topology keeps today's backend.
        assert_eq!(
            Topology::parse(Topology::BUILTIN_TEXT)
                .unwrap()
                .overlay
                .backend,
            Backend::Vxlan
        );
    }

    #[test]
    fn vxlan_only_faults_are_refused_on_the_udp_backend() {
        let udp = Topology::parse(SAMPLE).unwrap();
        let vxlan = Topology::parse(Topology::BUILTIN_TEXT).unwrap();
        let df = Fault::VxlanDf { node: None };
        let no_route = Fault::NoRoute {
            node: "node-1".into(),
            to: "node-2".into(),
        };
        assert!(check_fault(&udp, &df)
            .unwrap_err()
            .contains("needs a VXLAN overlay"));
        assert!(check_fault(&udp, &no_route).is_err());
        assert!(check_fault(&udp, &Fault::UnderlayMtu { mtu: 1400 }).is_ok());
        assert!(check_fault(&vxlan, &df).is_ok());
    }

    #[test]
    fn rejects_what_the_backend_cannot_build() {
        let too_big = SAMPLE.replace("mtu = 1472", "mtu = 1480");
        let e = Topology::parse(&too_big).unwrap_err();
        assert!(e.contains("exceeds the underlay mtu 1500"), "{e}");
        let long = SAMPLE.replace(
            "device = \"flannel0\"",
            "device = \"flannel0-much-too-long\"",
        );
        assert!(Topology::parse(&long)
            .unwrap_err()
            .contains("1-15 characters"));
        let dual = Topology::BUILTIN_TEXT.replace("[overlay]", "[overlay]\nbackend = \"udp\"");
        assert!(Topology::parse(&dual).unwrap_err().contains("IPv4-only"));
        let unknown = SAMPLE.replace("backend = \"udp\"", "backend = \"wireguard\"");
        assert!(Topology::parse(&unknown).is_err());
    }
}
