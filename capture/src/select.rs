//! `-i` values, parsed once and matched the same way by every command: `IFACE` or
//! `NETNS/IFACE`, each part a glob (`veth*`, `dye-demo-node-*/eth0`).

use crate::netns::glob_match;

/// Why a `-i` value is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad interface {0:?}: expected IFACE or NETNS/IFACE (globs allowed in either part)")]
pub struct BadInterface(pub String);

/// One `-i` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// As the user wrote it, for messages.
    pub text: String,
    /// The namespace part (`NETNS/IFACE`), if any.
    pub netns: Option<String>,
    pub ifname: String,
}

impl InterfaceSpec {
    /// Does this value select interface `ifname` of the namespace named `netns`?
    pub fn selects(&self, netns: &str, ifname: &str) -> bool {
        glob_match(&self.ifname, ifname)
            && self.netns.as_deref().is_none_or(|n| glob_match(n, netns))
    }
}

/// Every `-i` value of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceSelector {
    pub specs: Vec<InterfaceSpec>,
}

impl InterfaceSelector {
    pub fn parse(values: &[String]) -> Result<InterfaceSelector, BadInterface> {
        let specs = values
            .iter()
            .map(|v| match v.rsplit_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(InterfaceSpec {
                    text: v.clone(),
                    netns: Some(ns.to_string()),
                    ifname: name.to_string(),
                }),
                Some(_) => Err(BadInterface(v.clone())),
                None if !v.is_empty() => Ok(InterfaceSpec {
                    text: v.clone(),
                    netns: None,
                    ifname: v.clone(),
                }),
                None => Err(BadInterface(v.clone())),
            })
            .collect::<Result<_, _>>()?;
        Ok(InterfaceSelector { specs })
    }

    /// Values whose namespace part is a pod (`pod:default/pod-a/eth0`) resolve it, so they
    /// match the namespace by the name discovery gives it (`pod default/pod-a`).
    pub fn resolve_pods(&mut self) -> Result<(), crate::NetnsError> {
        for spec in &mut self.specs {
            if let Some(ns) = spec.netns.as_mut().filter(|n| n.trim().starts_with("pod:")) {
                *ns = crate::Netns::open_str(ns)?.name().to_string();
            }
        }
        Ok(())
    }

    /// No `-i` given: every interface is in.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Is interface `ifname` of `netns` selected (always, without `-i`)?
    pub fn selects(&self, netns: &str, ifname: &str) -> bool {
        self.is_empty() || self.specs.iter().any(|s| s.selects(netns, ifname))
    }

    /// The first value that selects none of `found` (`(netns, ifname)` pairs).
    pub fn unmatched<'a>(&'a self, found: &[(&str, &str)]) -> Option<&'a InterfaceSpec> {
        self.specs
            .iter()
            .find(|s| !found.iter().any(|(n, i)| s.selects(n, i)))
    }

    /// The values that name their namespace.
    pub fn qualified(&self) -> impl Iterator<Item = &InterfaceSpec> {
        self.specs.iter().filter(|s| s.netns.is_some())
    }

    /// True when some value names no namespace.
    pub fn has_plain(&self) -> bool {
        self.specs.iter().any(|s| s.netns.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: &[&str]) -> InterfaceSelector {
        InterfaceSelector::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn plain_and_qualified_values_with_globs() {
        let s = sel(&["veth*", "dye-demo-node-*/eth0"]);
        assert!(s.selects("dye-demo-node-1", "veth12ab"));
        assert!(s.selects("dye-demo-node-2", "eth0"));
        assert!(!s.selects("dye-demo-pod-a", "eth0"));
        assert!(s.has_plain());
        assert_eq!(s.qualified().count(), 1);
        assert_eq!(
            s.unmatched(&[("dye-demo-node-1", "eth0")])
                .map(|s| s.text.as_str()),
            Some("veth*")
        );
        assert!(sel(&[]).selects("anything", "lo"));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["/eth0", "ns/", ""] {
            assert_eq!(
                InterfaceSelector::parse(&[bad.to_string()]),
                Err(BadInterface(bad.to_string()))
            );
        }
    }
}
