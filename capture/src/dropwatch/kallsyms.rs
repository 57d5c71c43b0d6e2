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

    /// Reads `/proc/kallsyms`, keeping only the symbols that name `addrs`: one pass, no table
    /// of the ~100k others (a trace has a drop or two to name).
    pub fn load_for(addrs: &[u64]) -> std::io::Result<Kallsyms> {
        Ok(Kallsyms::parse_for(
            &std::fs::read_to_string("/proc/kallsyms")?,
            addrs,
        ))
    }

    /// Parses kallsyms text: `ffffffff81000000 T _text`, module symbols with `[module]`.
    pub fn parse(text: &str) -> Kallsyms {
        let mut symbols: Vec<(u64, String)> = text_symbols(text)
            .map(|(a, n)| (a, n.to_string()))
            .collect();
        symbols.sort_unstable();
        Kallsyms { symbols }
    }

    /// Like [`Kallsyms::parse`], keeping for each of `addrs` only the nearest symbol at or
    /// below it: [`Kallsyms::resolve`] names those addresses as the whole table would.
    pub fn parse_for(text: &str, addrs: &[u64]) -> Kallsyms {
        let mut best: Vec<Option<(u64, &str)>> = vec![None; addrs.len()];
        for (a, name) in text_symbols(text) {
            for (want, b) in addrs.iter().zip(best.iter_mut()) {
                if a <= *want && b.is_none_or(|(start, _)| a > start) {
                    *b = Some((a, name));
                }
            }
        }
        let mut symbols: Vec<(u64, String)> = best
            .into_iter()
            .flatten()
            .map(|(a, n)| (a, n.to_string()))
            .collect();
        symbols.sort_unstable();
        symbols.dedup();
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

/// The text (function) symbols of kallsyms text, with a real address.
fn text_symbols(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines().filter_map(|line| {
        let mut w = line.split_whitespace();
        let addr = u64::from_str_radix(w.next()?, 16).ok()?;
        let kind = w.next()?;
        let name = w.next()?;
        (addr != 0 && matches!(kind, "t" | "T")).then_some((addr, name))
    })
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

    #[test]
    fn a_table_for_some_addresses_names_them_as_the_whole_table_does() {
        let text = "ffffffff81000100 T ip_forward\nffffffff81000000 t ip_error\n\
                    ffffffff81000200 D some_data\nffffffff81000400 T later\nbad line\n";
        let all = Kallsyms::parse(text);
        let addrs = [
            0xffffffff81000123,
            0xffffffff81000000,
            0xffffffff81000300,
            0x10,
        ];
        let some = Kallsyms::parse_for(text, &addrs);
        for a in addrs {
            assert_eq!(some.resolve(a), all.resolve(a), "{a:#x}");
        }
        assert_eq!(some.symbols.len(), 2);
    }

    /// Against the running kernel: every address resolves alike (as root, which sees the
    /// addresses; others see zeros, and both tables are empty).
    #[test]
    fn the_kernels_own_table_agrees() {
        let text = std::fs::read_to_string("/proc/kallsyms").expect("/proc/kallsyms");
        let all = Kallsyms::parse(&text);
        let addrs: Vec<u64> = all
            .symbols
            .iter()
            .step_by(997)
            .map(|(a, _)| a + 3)
            .collect();
        let some = Kallsyms::parse_for(&text, &addrs);
        for a in addrs {
            assert_eq!(some.resolve(a), all.resolve(a), "{a:#x}");
        }
    }
}
