//! How lab objects are named on the host: every namespace is `dye-<id>-<name>`, and the lab's
//! files live under `/run/dye/lab-<id>/`, so several labs never collide and teardown can find
//! everything that belongs to one lab by name alone.

use std::path::PathBuf;

use super::LabError;

/// Where per-lab state (CNI IPAM data, responder logs, state.json) is kept. /run is a tmpfs:
/// nothing outlives a reboot even if teardown never runs.
pub const STATE_ROOT: &str = "/run/dye";

/// The admin host of an isolated lab: a machine on the underlay that is no node (no pods, no
/// agent), where a coordinator runs as an operator's workstation or bastion would.
pub const ADMIN: &str = "admin";

/// A validated lab id: 1-12 characters of [a-z0-9], so names stay short and unambiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabId(String);

impl LabId {
    pub fn parse(id: &str) -> Result<LabId, LabError> {
        let ok = !id.is_empty()
            && id.len() <= 12
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(LabId(id.to_string()))
        } else {
            Err(LabError::InvalidId(id.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace name of lab member `name` (a node, pod, the switch, the firewall…).
    pub fn ns(&self, name: &str) -> String {
        format!("dye-{}-{}", self.0, name)
    }

    /// The prefix shared by every namespace of this lab.
    pub fn ns_prefix(&self) -> String {
        format!("dye-{}-", self.0)
    }

    /// The cgroup parent (a top-level directory in every cgroup hierarchy) under which the
    /// runtime of lab node `node` puts its pod sandboxes.
    pub fn cgroup(&self, node: &str) -> String {
        format!("dye-{}-{}", self.0, node)
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(format!("lab-{}", self.0))
    }
}

impl std::fmt::Display for LabId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of the underlay switch namespace.
pub const UNDERLAY: &str = "underlay";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_plain() {
        assert!(LabId::parse("demo").is_ok());
        assert!(LabId::parse("t0123456789a").is_ok());
        for bad in ["", "Demo", "a-b", "a/b", "toolongid12345", "../x"] {
            assert!(LabId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let id = LabId::parse("x1").unwrap();
        assert_eq!(id.ns("node-1"), "dye-x1-node-1");
        assert_eq!(id.state_dir(), PathBuf::from("/run/dye/lab-x1"));
    }
}
