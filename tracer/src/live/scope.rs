//! Where to listen. By default the namespaces the probe's path goes through, walked from the
//! source by route lookups ([`super::walk`]): the source, every namespace that routes or
//! bridges the probe, the destination, the targets of DNAT rules on the way, and the replies'
//! way back — not every pod on a bridge. `--ns` and `--all-ns` choose namespaces instead. The
//! capture points are the up interfaces of those namespaces; the ones the walk crossed are
//! marked as the path.

use std::net::IpAddr;

use dye_capture::netlink::LinkKind;
use dye_capture::select::{BadInterface, InterfaceSelector};
use dye_capture::topology::Topology;
use dye_capture::{CapturePoint, Netns, SocketModel};
use dye_core::snapshot::{Point, ScopeBy};

use super::host::HostView;
use super::pod_names::SharedNamer;
use super::walk;

/// How the user shaped the capture.
#[derive(Debug, Clone, Default)]
pub struct ScopeRequest {
    /// Capture only in these namespaces (names, paths, PIDs, `host`, or globs over /run/netns;
    /// the source is always included).
    pub namespaces: Vec<String>,
    /// Capture in every namespace on the host.
    pub all_namespaces: bool,
    /// Capture only on interfaces with these names (`IFACE` or `NETNS/IFACE`, globs allowed).
    pub interfaces: Vec<String>,
    /// Refuse more points than this with per-interface sockets (each point is two kernel
    /// capture handles); namespace sockets cost nothing per point.
    pub max_points: usize,
    /// One packet socket per namespace, or two handles per interface.
    pub sockets: SocketModel,
    /// Names the namespaces in scope after their pods when a container runtime answers
    /// ([`super::pod_names`]); none: namespaces keep the names they are listed under.
    pub pod_names: Option<SharedNamer>,
}

impl ScopeRequest {
    /// `namespaces` as this request names them: pods' by their pods where the namer may, but
    /// a namespace `-i NETNS/IFACE` names keeps the name it was chosen by.
    fn name_pods(&self, namespaces: Vec<Netns>, interfaces: &InterfaceSelector) -> Vec<Netns> {
        let Some(namer) = &self.pod_names else {
            return namespaces;
        };
        let chosen_by_name = |ns: &Netns| {
            interfaces.qualified().any(|spec| {
                let pattern = spec.netns.as_deref().unwrap_or_default();
                dye_capture::netns::glob_match(pattern, ns.name())
            })
        };
        namer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(namespaces, &chosen_by_name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error(transparent)]
    Netns(#[from] dye_capture::NetnsError),
    #[error("discovering the network topology: {0}")]
    Topology(#[from] dye_capture::TopologyError),
    #[error(transparent)]
    BadInterface(#[from] BadInterface),
    #[error("no capture point matches -i {0:?} in the namespaces in scope")]
    NoSuchInterface(String),
    #[error("{count} capture points exceed --max-points {max}; narrow the scope with --ns or -i")]
    TooManyPoints { count: usize, max: usize },
}

/// The namespaces and capture points of one trace.
#[derive(Debug)]
pub struct Scope {
    pub topology: Topology,
    pub points: Vec<CapturePoint>,
    /// The same points as the core sees them (link types are filled in once capture opens).
    pub metas: Vec<Point>,
    /// The source namespace's name in `topology` (found by inode: `--from 4242` and
    /// `--from dye-demo-pod-a` may name the same namespace).
    pub source: String,
    pub by: ScopeBy,
}

impl Scope {
    /// The scope of a probe from `source` to `dst`, sent from `src`.
    pub fn discover(
        source: &Netns,
        req: &ScopeRequest,
        dst: IpAddr,
        src: IpAddr,
    ) -> Result<Scope, ScopeError> {
        let mut interfaces = InterfaceSelector::parse(&req.interfaces)?;
        interfaces.resolve_pods()?;
        let mut path: Vec<(String, String)> = Vec::new();
        let (topology, by) = if !req.all_namespaces && !req.namespaces.is_empty() {
            // Names, paths, PIDs, `host`, or patterns over /run/netns (`dye-demo-*`), as
            // `dye capture --ns` takes them.
            let mut chosen = vec![source.clone()];
            for ns in dye_capture::netns::select(&req.namespaces, false)? {
                if !chosen.iter().any(|c| c.id() == ns.id()) {
                    chosen.push(ns);
                }
            }
            let chosen = req.name_pods(chosen, &interfaces);
            (Topology::discover(&chosen)?, ScopeBy::Namespaces)
        } else if req.all_namespaces {
            let mut all = Netns::enumerate()?;
            all.push(source.clone()); // dropped again if already listed (same inode)
            let all = req.name_pods(all, &interfaces);
            (Topology::discover(&all)?, ScopeBy::All)
        } else {
            // The named namespaces first (the rest of the host only if a veth leads there),
            // the source last: a namespace also listed under its /run/netns name keeps it.
            let mut known: Vec<Netns> = dye_capture::netns::list_named()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| Netns::open(&dye_capture::NetnsRef::Name(n)).ok())
                .collect();
            known.push(source.clone());
            let mut view = HostView::new(known);
            let walked = walk::walk(&mut view, &source.id(), dst, src);
            let mut chosen: Vec<Netns> = walked
                .namespaces
                .iter()
                .filter_map(|id| view.netns(*id).cloned())
                .collect();
            // `-i NETNS/IFACE` names a namespace: it is listened to, on the path or not.
            for spec in interfaces.qualified() {
                let pattern = spec.netns.as_deref().unwrap_or_default();
                for ns in view.all().iter() {
                    if dye_capture::netns::glob_match(pattern, ns.name())
                        && !chosen.iter().any(|c| c.id() == ns.id())
                    {
                        chosen.push(ns.clone());
                    }
                }
            }
            // Only the walked namespaces are read: idle pods' veths get no peer edge.
            let chosen = req.name_pods(chosen, &interfaces);
            let topology = Topology::discover_within(&chosen)?;
            for (id, ifname) in &walked.points {
                if let Some(info) = topology.namespaces.iter().find(|n| n.id == *id) {
                    path.push((info.name.clone(), ifname.clone()));
                }
            }
            (topology, ScopeBy::Path)
        };
        let source_name = topology
            .namespaces
            .iter()
            .find(|n| n.id == source.id())
            .map(|n| n.name.clone())
            .unwrap_or_else(|| source.name().to_string());
        let mut points = Vec::new();
        let mut metas = Vec::new();
        for info in &topology.namespaces {
            for link in &info.links {
                if link.kind == LinkKind::Loopback || !link.up {
                    continue;
                }
                if !interfaces.selects(&info.name, &link.name) {
                    continue;
                }
                points.push(CapturePoint {
                    netns: info.netns.clone(),
                    ifname: link.name.clone(),
                    kind: link.kind.short().to_string(),
                    mtu: link.mtu,
                    node: info.node.clone(),
                });
                metas.push(Point {
                    netns: info.name.clone(),
                    ifname: link.name.clone(),
                    class: super::snapshot::class(&link.kind),
                    node: info.node.clone(),
                    mtu: link.mtu,
                    linktype: 1,
                    // Points the user chose with -i are listed whether on the path or not.
                    on_path: by != ScopeBy::Path
                        || !interfaces.is_empty()
                        || path.iter().any(|(n, i)| *n == info.name && *i == link.name),
                });
            }
        }
        let found: Vec<(&str, &str)> = metas
            .iter()
            .map(|m| (m.netns.as_str(), m.ifname.as_str()))
            .collect();
        if let Some(missing) = interfaces.unmatched(&found) {
            return Err(ScopeError::NoSuchInterface(missing.text.clone()));
        }
        if req.sockets == SocketModel::PerInterface
            && req.max_points > 0
            && points.len() > req.max_points
        {
            return Err(ScopeError::TooManyPoints {
                count: points.len(),
                max: req.max_points,
            });
        }
        Ok(Scope {
            topology,
            points,
            metas,
            source: source_name,
            by,
        })
    }
}
