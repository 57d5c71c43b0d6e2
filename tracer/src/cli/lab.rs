//! `dye lab`: bring the emulated cluster up and down, look at it, break it on purpose.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::lab::{self, Fault, LabId, LabView, Topology};
use anyhow::Context;
use clap::{Args, Subcommand};

use super::{EXIT_NEGATIVE, EXIT_OK};

#[derive(Debug, Args)]
#[command(after_help = "\
The lab is a two-node Kubernetes network made of network namespaces named dye-<ID>-<member>:
an underlay switch, node-1 and node-2 each running containerd, whose CRI makes the pods (real pod
sandboxes, CNI bridge networking on cni0, published as dye-<ID>-pod-*), a flannel-style
VXLAN overlay (flannel.1, VNI 1, UDP 8472), four pods with TCP/UDP responders, kube-proxy
iptables chains for a ClusterIP + NodePort service, and an edge firewall doing NAT in front of
an office network that reuses the pod range. The built-in lab is dual-stack: pods also get
IPv6 (fd00:244:<node>::/64) from the same CNI plugins, flannel-v6.1 carries it between nodes
over an IPv6 underlay (fd00:50::/64), and the firewall routes it (no NAT66) to the office
(fd00:10::/64). Nothing is added to the root network namespace.

Examples:
  dye lab up                         # lab \"demo\" from the built-in topology
  ip netns exec dye-demo-pod-a ping -c1 10.244.2.2
  ip netns exec dye-demo-pod-a ping -c1 fd00:244:2::2
  dye lab fault demo underlay-mtu 1400
  dye lab status demo
  dye lab down demo
  dye lab up --id iso --isolated     # every node its own host, an agent container on each
  dye lab exec --id iso node-1 -- dye trace --agents 192.168.50.11:7443,192.168.50.12:7443 \\
      --certs /run/dye/lab-iso/certs --from pod:pod-a --to pod:pod-c")]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build a lab. Fails, leaving nothing behind, if the id is taken or a tool is missing.
    Up {
        /// Lab id (1-12 of a-z, 0-9); namespaces are named dye-<ID>-<member>.
        #[arg(long, default_value = "demo")]
        id: String,
        /// Topology file (TOML) instead of the built-in one (samples/lab/cluster.toml), e.g.
        /// samples/lab/routed.toml: a router between the nodes' subnets, Calico-style pods,
        /// VXLAN on 4789, kube-proxy in nftables mode.
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
        /// Print the resulting lab as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Put N idle pods on every node's bridge besides the named ones (real CRI sandboxes
        /// without responders): a busy node, for benchmarks. At most 240.
        #[arg(long, value_name = "N")]
        idle_pods: Option<u32>,
        /// Start a `dye agent` in every node's namespace, listening on the node's underlay
        /// address (port 7443), with certificates made in the lab's state directory
        /// (/run/dye/lab-ID/certs); `dye lab down` stops them.
        #[arg(long)]
        agents: bool,
        /// Make every node a host of its own, as on a real cluster: besides its network
        /// namespace, its own mount, PID and UTS namespaces — its /proc lists only its
        /// processes, its /run/netns only its pods, its hostname is the node's name, and
        /// /run/containerd/containerd.sock is its runtime. Its agent runs as a container
        /// from dye's image (`dye image build`) through the node's CRI, with the DaemonSet's
        /// host namespaces and capabilities. Implies --agents. Enter a node with
        /// `dye lab exec NODE -- CMD`.
        #[arg(long)]
        isolated: bool,
    },
    /// Remove labs: pod sandboxes (over CRI), the nodes' containerd with their shims and
    /// cgroups, other processes, namespaces (with all links, routes and rules inside) and
    /// state files. Removing an unknown id is harmless.
    Down {
        /// Lab ids to remove.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Remove every lab on this host, including remains of interrupted ones.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Show a lab's members, interfaces, addresses, services and faults; without an id, list
    /// the labs on this host.
    Status {
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Break a running lab on purpose (or `clear` to repair it). Faults are recorded and
    /// shown by `status`.
    Fault {
        /// The lab to change.
        id: String,
        #[command(subcommand)]
        fault: FaultArg,
    },
    /// Run a command inside a lab member's network namespace (node-1, pod-a, fw…), e.g.
    /// `dye lab exec node-1 -- dye trace --agents 192.168.50.11:7443,192.168.50.12:7443
    /// --certs /run/dye/lab-demo/certs --from pod:pod-a --to pod:pod-c`. A node of an
    /// isolated lab (`up --isolated`) is entered whole: its network, mount, PID and UTS
    /// namespaces. Exits with the command's status.
    Exec {
        /// Lab id.
        #[arg(long, default_value = "demo")]
        id: String,
        /// The lab member whose namespace to enter.
        member: String,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// (internal) PID 1 of an isolated node: runs COMMAND (its containerd), reaps orphans,
    /// exits on SIGTERM or once --watch is gone, and with it every process of the node.
    #[command(hide = true)]
    NodeInit {
        #[arg(long)]
        watch: PathBuf,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// (internal) Replace a node's agent (what the agent-stop and agent-clock faults and
    /// their undo run).
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        id: String,
        node: String,
        /// Stop it, start none.
        #[arg(long, conflicts_with = "clock_offset")]
        stop: bool,
        #[arg(long, allow_hyphen_values = true)]
        clock_offset: Option<String>,
    },
    /// (internal) The TCP/UDP responder each lab pod runs.
    #[command(hide = true)]
    Responder {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tcp: u16,
        #[arg(long)]
        udp: u16,
        #[arg(long)]
        ready: Option<PathBuf>,
    },
    /// (internal) flannel udp backend: the forwarder each node runs, owning its TUN device.
    #[command(hide = true)]
    Forward {
        /// The TUN device to create (raw IP).
        #[arg(long)]
        tun: String,
        /// The node's underlay address (bound for UDP).
        #[arg(long)]
        local: std::net::Ipv4Addr,
        /// UDP port on every node.
        #[arg(long, default_value_t = 8285)]
        port: u16,
        /// Another node: POD_SUBNET=UNDERLAY_ADDRESS (repeatable).
        #[arg(long = "peer", value_parser = lab::udp_forwarder::parse_peer)]
        peers: Vec<(ipnet::Ipv4Net, std::net::Ipv4Addr)>,
        /// Written once the device exists.
        #[arg(long)]
        ready: Option<PathBuf>,
        /// Exit when this path disappears (the lab's state directory).
        #[arg(long)]
        watch: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum FaultArg {
    /// Shrink every underlay link to MTU while flannel.1 keeps its own (the overlay then needs
    /// outer fragmentation, or drops with `vxlan-df`).
    UnderlayMtu { mtu: u32 },
    /// Set one interface's MTU, and its veth peer's: MEMBER/IFACE, e.g. fw/eth1.
    LinkMtu {
        #[arg(value_name = "MEMBER/IFACE")]
        link: String,
        mtu: u32,
    },
    /// Set the outer DF bit on the VXLAN device (all nodes, or --node): oversized overlay
    /// packets are dropped instead of fragmented.
    VxlanDf {
        #[arg(long)]
        node: Option<String>,
    },
    /// Insert a DROP rule for a pod at the top of its node's FORWARD chain.
    DropPod { pod: String },
    /// Delete NODE's overlay route to the pod subnet of node TO.
    NoRoute { node: String, to: String },
    /// A NetworkPolicy-style nftables drop (table inet netpol, its own forward chain jumping
    /// to `ingress-POD`) on POD's node: other nodes' pods cannot reach POD.
    NetpolDrop { pod: String },
    /// Set NODE's FORWARD chain policy (iptables, table ip filter) to DROP.
    ForwardPolicyDrop { node: String },
    /// Strict rp_filter on NODE, with FROM's pod subnet routed back via the underlay instead
    /// of the overlay: FROM's pods' packets arriving on the overlay are dropped.
    RpFilter { node: String, from: String },
    /// Route TO's pod subnet on NODE via an underlay address nobody owns: ARP never answers.
    DeadNeighbour { node: String, to: String },
    /// Drop conntrack-INVALID packets NODE forwards (`ct state invalid drop`, table inet
    /// ctguard); try it with `dye trace --proto tcp --tcp-segment fin`.
    CtInvalidDrop { node: String },
    /// Stop NODE's agent (lab up --agents/--isolated): the node is blind to coordinators,
    /// which must say so rather than blame it.
    AgentStop { node: String },
    /// Restart NODE's agent with DYE_AGENT_CLOCK_OFFSET=OFFSET (e.g. 37ms, -50ms): a lab and
    /// test knob that shifts every timestamp the agent reports, as a node whose clock is off
    /// would; coordinators estimate and remove it.
    #[command(allow_negative_numbers = true)]
    AgentClock {
        node: String,
        #[arg(allow_hyphen_values = true)]
        offset: String,
    },
    /// Cut NODE off the underlay: the far end of its uplink goes down (the underlay switch's
    /// port named after NODE, or on a routed topology the router's), as when a node's cable,
    /// switch port or top-of-rack link fails. NODE's own eth0, addresses and routes are left
    /// alone (it shows NO-CARRIER), so `clear` restores the lab exactly. The node and its
    /// agent keep running but nothing crosses the underlay to or from it: try
    /// `dye trace --agents …` from another node, which reports NODE's agent unreachable and
    /// the trace as partial rather than blaming NODE for a drop nobody observed.
    UnderlayCut {
        /// The node to cut off, e.g. node-2 (see `dye lab status ID`).
        node: String,
    },
    /// Undo every fault applied to the lab.
    Clear,
}

pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::Up {
            id,
            topology,
            json,
            idle_pods,
            agents,
            isolated,
        } => up(
            &id,
            topology,
            json,
            &lab::UpOptions {
                idle_pods,
                agents,
                isolated,
            },
        ),
        LabCommand::Agent {
            id,
            node,
            stop,
            clock_offset,
        } => {
            let id = LabId::parse(&id)?;
            lab::agents::restart(&id, &node, stop, clock_offset)?;
            Ok(ExitCode::from(EXIT_OK))
        }
        LabCommand::NodeInit { watch, command } => {
            lab::node_host::run_init(&watch, &command).context("node init")?;
            Ok(ExitCode::from(EXIT_OK))
        }
        LabCommand::Exec {
            id,
            member,
            command,
        } => exec(&id, &member, &command),
        LabCommand::Down { ids, all } => down(ids, all),
        LabCommand::Status { id, json } => status(id, json),
        LabCommand::Fault { id, fault } => apply(&id, fault),
        LabCommand::Responder {
            name,
            tcp,
            udp,
            ready,
        } => {
            lab::responder::serve(&name, tcp, udp, ready.as_deref())
                .with_context(|| format!("responder {name}"))?;
            Ok(ExitCode::from(EXIT_OK))
        }
        LabCommand::Forward {
            tun,
            local,
            port,
            peers,
            ready,
            watch,
        } => {
            let cfg = lab::udp_forwarder::ForwarderConfig {
                tun,
                local,
                port,
                peers,
                ready,
                watch,
            };
            lab::udp_forwarder::run(&cfg)
                .with_context(|| format!("udp forwarder on {}", cfg.tun))?;
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}

fn up(
    id: &str,
    topology: Option<PathBuf>,
    json: bool,
    options: &lab::UpOptions,
) -> anyhow::Result<ExitCode> {
    let id = LabId::parse(id)?;
    let (text, source) = match &topology {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read topology file {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (Topology::BUILTIN_TEXT.to_string(), "builtin".to_string()),
    };
    let started = std::time::Instant::now();
    lab::up(&id, &text, &source, options)?;
    let view = lab::inspect(&id)?;
    if json {
        print_json(&view)?;
    } else {
        print_view(&view)?;
        eprintln!(
            "lab {id} is up ({:.1} s). Remove it with: dye lab down {id}",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// Replaces this process with `ip netns exec <member's namespace> CMD…` (the lab's way into a
/// namespace, with /sys remounted for it), or for a node of an isolated lab with `nsenter`
/// into all of the node's namespaces, so the command's status is ours.
fn exec(id: &str, member: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let id = LabId::parse(id)?;
    let state = lab::load_state(&id)?;
    let ns = id.ns(member);
    if !state.namespaces.contains(&ns) {
        anyhow::bail!(
            "lab {id} has no member {member:?} (see `dye lab status {id}` for its members)"
        );
    }
    let admin = state
        .admin
        .as_ref()
        .filter(|_| member == lab::ADMIN)
        .and_then(|a| a.init_pid);
    if let Some(init) = state.runtime(member).and_then(|r| r.init_pid).or(admin) {
        let err = lab::node_host::enter(init, command).exec();
        return Err(err)
            .with_context(|| format!("entering node {member} (its init is pid {init})"));
    }
    let err = std::process::Command::new("ip")
        .args(["netns", "exec", ns.as_str()])
        .args(command)
        .exec();
    Err(err).with_context(|| format!("running ip netns exec {ns} {}", command.join(" ")))
}

fn down(ids: Vec<String>, all: bool) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = if all {
        lab::list_labs()?.into_iter().map(|l| l.id).collect()
    } else {
        ids
    };
    for id in ids {
        let id = LabId::parse(&id)?;
        let removed = lab::down(&id)?;
        if removed.namespaces.is_empty() && !removed.state_dir {
            println!("lab {id}: nothing to remove");
        } else {
            let sandboxes = match removed.sandboxes {
                0 => String::new(),
                1 => "1 pod sandbox, ".to_string(),
                n => format!("{n} pod sandboxes, "),
            };
            println!(
                "lab {id}: removed {} namespaces, {sandboxes}{} processes{}",
                removed.namespaces.len(),
                removed.processes,
                if removed.state_dir {
                    ", state files"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

fn status(id: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let Some(id) = id else {
        let labs = lab::list_labs()?;
        if json {
            print_json(&labs)?;
        } else if labs.is_empty() {
            println!("no labs on this host");
        } else {
            for l in &labs {
                let what = match (l.has_state, l.complete) {
                    (true, true) => "up",
                    (true, false) => "incomplete (run `dye lab down` to remove it)",
                    (false, _) => "remains without state (run `dye lab down` to remove them)",
                };
                println!("{:<12} {what}, {} namespaces", l.id, l.namespaces.len());
            }
        }
        return Ok(ExitCode::from(EXIT_OK));
    };
    let id = LabId::parse(&id)?;
    let view = lab::inspect(&id)?;
    if json {
        print_json(&view)?;
    } else {
        print_view(&view)?;
    }
    Ok(ExitCode::from(if view.complete {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    }))
}

fn apply(id: &str, arg: FaultArg) -> anyhow::Result<ExitCode> {
    let id = LabId::parse(id)?;
    let fault = match arg {
        FaultArg::Clear => {
            let cleared = lab::clear_faults(&id)?;
            if cleared.is_empty() {
                println!("lab {id}: no faults to clear");
            }
            for f in cleared {
                println!("lab {id}: cleared: {}", f.description);
            }
            return Ok(ExitCode::from(EXIT_OK));
        }
        FaultArg::UnderlayMtu { mtu } => Fault::UnderlayMtu { mtu },
        FaultArg::LinkMtu { link, mtu } => {
            let (member, ifname) = link
                .split_once('/')
                .with_context(|| format!("{link:?} is not MEMBER/IFACE, e.g. fw/eth1"))?;
            Fault::LinkMtu {
                member: member.into(),
                ifname: ifname.into(),
                mtu,
            }
        }
        FaultArg::VxlanDf { node } => Fault::VxlanDf { node },
        FaultArg::DropPod { pod } => Fault::DropPod { pod },
        FaultArg::NoRoute { node, to } => Fault::NoRoute { node, to },
        FaultArg::NetpolDrop { pod } => Fault::NetpolDrop { pod },
        FaultArg::ForwardPolicyDrop { node } => Fault::ForwardPolicyDrop { node },
        FaultArg::RpFilter { node, from } => Fault::RpFilter { node, from },
        FaultArg::DeadNeighbour { node, to } => Fault::DeadNeighbour { node, to },
        FaultArg::CtInvalidDrop { node } => Fault::CtInvalidDrop { node },
        FaultArg::AgentStop { node } => Fault::AgentStop { node },
        FaultArg::AgentClock { node, offset } => Fault::AgentClock { node, offset },
        FaultArg::UnderlayCut { node } => Fault::UnderlayCut { node },
    };
    let record = lab::apply_fault(&id, fault)?;
    println!("lab {id}: {}", record.description);
    Ok(ExitCode::from(EXIT_OK))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// The lab as a table: one block per member, one line per interface.
fn print_view(view: &LabView) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let state = if view.complete { "up" } else { "INCOMPLETE" };
    writeln!(
        out,
        "lab {} — {state} (topology: {})",
        view.id, view.topology
    )?;
    for m in &view.members {
        let role = match &m.node {
            Some(node) => format!("{} on {node}", m.role),
            None => m.role.to_string(),
        };
        let runtime = match (&m.pod, &m.cri_socket) {
            (Some(p), _) => format!(
                "  pod {}/{} (sandbox {}…)",
                p.namespace,
                p.name,
                p.sandbox_id.get(..12).unwrap_or(&p.sandbox_id)
            ),
            (None, Some(socket)) => format!("  containerd {socket}"),
            (None, None) => String::new(),
        };
        writeln!(out, "  {:<22} {role}{runtime}", m.netns)?;
        for i in m.interfaces.iter().filter(|i| i.kind != "loopback") {
            let master = i
                .master
                .as_deref()
                .map(|m| format!(" master {m}"))
                .unwrap_or_default();
            writeln!(
                out,
                "      {:<14} {:<7} mtu {:<5} {}{master}",
                i.name,
                i.kind,
                i.mtu,
                i.addresses
                    .iter()
                    .chain(&i.addresses6)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
        }
    }
    for s in &view.services {
        writeln!(
            out,
            "  service {} {} [{}] → {}",
            s.name,
            s.cluster_ip,
            s.ports.join(", "),
            s.endpoints.join(", ")
        )?;
    }
    if let Some(fw) = &view.firewall {
        writeln!(
            out,
            "  firewall: VIP {} → {}; office {} hidden behind {}",
            fw.vip, fw.publishes_to, fw.office_subnet, fw.snat_to
        )?;
    }
    for a in &view.agents {
        let how = match (&a.container, a.pid) {
            (_, 0) => "stopped".to_string(),
            (Some(c), pid) => format!(
                "container {}…, pid {pid}",
                c.container.get(..12).unwrap_or(&c.container)
            ),
            (None, pid) => format!("pid {pid}"),
        };
        let clock = a
            .clock_offset
            .as_ref()
            .map(|o| format!(", clock offset {o}"))
            .unwrap_or_default();
        writeln!(out, "  agent: {} on {} ({how}{clock})", a.node, a.address)?;
    }
    if let Some(certs) = &view.certs {
        writeln!(out, "  agents' certificates: {certs}")?;
    }
    if view.isolated {
        writeln!(
            out,
            "  nodes are isolated hosts (own mount, PID and UTS namespaces): \
             enter one with `dye lab exec --id {} NODE -- CMD`",
            view.id
        )?;
    }
    if let Some(admin) = &view.admin {
        writeln!(
            out,
            "  admin host {admin} on the underlay (no pods, no agent): \
             `dye lab exec --id {} admin -- dye trace --agents …`",
            view.id
        )?;
    }
    if view.faults.is_empty() {
        writeln!(out, "  faults: none")?;
    } else {
        for f in &view.faults {
            writeln!(out, "  FAULT: {f}")?;
        }
    }
    Ok(())
}
