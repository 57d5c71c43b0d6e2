//! Kernel addresses to function names, from `/proc/kallsyms` (root sees real addresses): the
//! nearest text symbol at or below an address, as `name+0xoff`.

/// A sorted table of kernel text symbols.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// (address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`. An unprivileged reader sees zero addresses: the table is empty
    /// and nothing is named.
    pub fn load() -> std::io::Result<Kallsyms> {
        Ok(Kallsyms::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Parses kallsyms text: `ffffffff81000000 T _text`, module symbols with `[module]`.
    pub fn parse(text: &str) -> Kallsyms {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut w = line.split_whitespace();
                let addr = u64::from_str_radix(w.next()?, 16).ok()?;
                let kind = w.next()?;
                let name = w.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_string()))
            })
            .collect();
        symbols.sort_unstable();
        Kallsyms { symbols }
    }

    /// `function+0xoffset` of `addr`, when a symbol lies at or below it.
    pub fn resolve(&self, addr: u64) -> Option<Symbol<'_>> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        let (start, name) = self.symbols.get(i.checked_sub(1)?)?;
        Some(Symbol {
            name,
            offset: addr - start,
        })
    }
}

/// A resolved kernel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    pub name: &'a str,
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_symbol_at_or_below() {
        let k = Kallsyms::parse(
            "ffffffff81000100 T ip_forward\nffffffff81000000 t ip_error\n\
             ffffffff81000200 D some_data\n0000000000000000 T hidden\nbad line\n",
        );
        assert_eq!(
            k.resolve(0xffffffff81000123),
            Some(Symbol {
                name: "ip_forward",
                offset: 0x23
            })
        );
        assert_eq!(k.resolve(0xffffffff81000000).unwrap().name, "ip_error");
        // Data symbols are not functions: an address past them stays with the last function.
        assert_eq!(k.resolve(0xffffffff81000300).unwrap().name, "ip_forward");
        assert_eq!(k.resolve(0x10), None);
    }
}
