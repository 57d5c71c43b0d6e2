//! Names of an enum's values from kernel BTF (`/sys/kernel/btf/vmlinux`): the drop reasons are
//! read from the running kernel, not from a table that goes stale with the next release. A small
//! reader: the header, the string section, and a walk over the type section that only decodes
//! enums (every other kind is skipped by its size).

use std::collections::HashMap;

/// Where the kernel publishes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

/// Why BTF could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF (bad magic or truncated header)")]
    Header,
    #[error("BTF type {index} is cut short or of unknown kind {kind}")]
    Type { index: usize, kind: u32 },
    #[error("BTF has no enum named {0}")]
    NoEnum(String),
}

/// The values of one enum, by number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnumNames {
    names: HashMap<u64, String>,
}

impl EnumNames {
    pub fn name(&self, value: u64) -> Option<&str> {
        self.names.get(&value).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Reads enum `wanted` from the running kernel's BTF.
    pub fn from_kernel(wanted: &str) -> Result<EnumNames, std::io::Error> {
        let data = std::fs::read(VMLINUX)?;
        EnumNames::parse(&data, wanted).map_err(std::io::Error::other)
    }

    /// Finds enum `wanted` (BTF_KIND_ENUM or ENUM64) in raw BTF `data` (native byte order).
    pub fn parse(data: &[u8], wanted: &str) -> Result<EnumNames, BtfError> {
        let h = Reader { data };
        if h.u16(0) != Some(MAGIC) {
            return Err(BtfError::Header);
        }
        let hdr_len = h.u32(4).ok_or(BtfError::Header)? as usize;
        let field = |at: usize| h.u32(8 + at).map(|v| v as usize).ok_or(BtfError::Header);
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(4)?, field(8)?, field(12)?);
        let types = slice(data, hdr_len + type_off, type_len).ok_or(BtfError::Header)?;
        let strings = slice(data, hdr_len + str_off, str_len).ok_or(BtfError::Header)?;
        let name_at = |off: u32| -> &str {
            let Some(rest) = strings.get(off as usize..) else {
                return "";
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            std::str::from_utf8(&rest[..end]).unwrap_or("")
        };
        let t = Reader { data: types };
        let mut at = 0;
        let mut index = 1;
        while at < types.len() {
            let bad = BtfError::Type { index, kind: 0 };
            let (name_off, info) = (t.u32(at).ok_or(bad.clone())?, t.u32(at + 4).ok_or(bad)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
                _ => return Err(BtfError::Type { index, kind }),
            };
            let body = at + 12;
            if body + extra > types.len() {
                return Err(BtfError::Type { index, kind });
            }
            if (kind == 6 || kind == 19) && name_at(name_off) == wanted {
                let signed = info >> 31 == 1;
                let step = if kind == 6 { 8 } else { 12 };
                let mut names = HashMap::new();
                for i in 0..vlen {
                    let m = body + i * step;
                    let (Some(n), Some(lo)) = (t.u32(m), t.u32(m + 4)) else {
                        break;
                    };
                    let value = if kind == 6 {
                        if signed {
                            lo as i32 as i64 as u64
                        } else {
                            u64::from(lo)
                        }
                    } else {
                        u64::from(t.u32(m + 8).unwrap_or(0)) << 32 | u64::from(lo)
                    };
                    names.insert(value, name_at(n).to_string());
                }
                return Ok(EnumNames { names });
            }
            at = body + extra;
            index += 1;
        }
        Err(BtfError::NoEnum(wanted.to_string()))
    }
}

fn slice(data: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    data.get(at..at.checked_add(len)?)
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(
            self.data.get(at..at + 2)?.try_into().ok()?,
        ))
    }
    fn u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(
            self.data.get(at..at + 4)?.try_into().ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with one INT and one ENUM `colour { RED = 1, BLUE = -1 (signed) }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0colour\0RED\0BLUE\0";
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_ne_bytes());
        // INT "int": name 1, kind 1, size 4, + encoding word
        push(1);
        push(1 << 24);
        push(4);
        push(0x20);
        // ENUM "colour" (signed), 2 values
        push(5);
        push(1 << 31 | 6 << 24 | 2);
        push(4);
        push(12);
        push(1);
        push(16);
        push(-1i32 as u32);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn reads_an_enum_and_skips_other_kinds() {
        let e = EnumNames::parse(&blob(), "colour").unwrap();
        assert_eq!(e.name(1), Some("RED"));
        assert_eq!(e.name(u64::MAX), Some("BLUE"));
        assert_eq!(e.len(), 2);
        assert_eq!(
            EnumNames::parse(&blob(), "shade"),
            Err(BtfError::NoEnum("shade".into()))
        );
    }

    #[test]
    fn never_panics_on_cut_input() {
        let b = blob();
        for n in 0..b.len() {
            let _ = EnumNames::parse(&b[..n], "colour");
        }
        let mut bad = b.clone();
        bad[8] = 0xff; // type_off far past the end
        assert!(EnumNames::parse(&bad, "colour").is_err());
    }

    #[test]
    fn the_running_kernel_names_its_drop_reasons() {
        let Ok(e) = EnumNames::from_kernel("skb_drop_reason") else {
            eprintln!("skipped: no readable {VMLINUX}");
            return;
        };
        // Cross-checked against bpftool's dump of the same BTF in capture/tests/dropwatch.rs.
        assert_eq!(e.name(2), Some("SKB_DROP_REASON_NOT_SPECIFIED"));
    }
}
