//! A small classic-BPF assembler: libpcap's compiled programs joined into one socket filter,
//! and a program relocated to run on a frame that starts inside the packet (a tunnel's inner
//! frame, at a runtime offset kept in scratch memory).
//!
//! Jumps are held as absolute targets (instruction indices or labels) while a program is built
//! and turned into classic BPF's relative offsets at the end; a conditional jump farther than
//! 255 instructions, a program over 4096 instructions, or a program that already uses the
//! scratch slots relocation needs is an error, and the caller falls back to filtering tunnel
//! packets in userspace.

use std::collections::HashMap;

// Instruction classes, sizes, modes and operations (linux/filter.h, linux/bpf_common.h).
pub const LD: u16 = 0x00;
pub const LDX: u16 = 0x01;
pub const ST: u16 = 0x02;
pub const STX: u16 = 0x03;
pub const ALU: u16 = 0x04;
pub const JMP: u16 = 0x05;
pub const RET: u16 = 0x06;
pub const MISC: u16 = 0x07;
pub const W: u16 = 0x00;
pub const H: u16 = 0x08;
pub const B: u16 = 0x10;
pub const IMM: u16 = 0x00;
pub const ABS: u16 = 0x20;
pub const IND: u16 = 0x40;
pub const MEM: u16 = 0x60;
pub const LEN: u16 = 0x80;
pub const MSH: u16 = 0xa0;
pub const ADD: u16 = 0x00;
pub const SUB: u16 = 0x10;
pub const AND: u16 = 0x50;
pub const LSH: u16 = 0x60;
pub const JA: u16 = 0x00;
pub const JEQ: u16 = 0x10;
pub const JGE: u16 = 0x30;
pub const JSET: u16 = 0x40;
pub const K: u16 = 0x00;
pub const X: u16 = 0x08;
pub const TAX: u16 = 0x00;
pub const TXA: u16 = 0x80;

/// Kernel limit on a classic BPF program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;
/// Loads at or above this offset are the kernel's ancillary data, not packet bytes.
const SKF_AD_OFF: u32 = 0xffff_f000;

/// Scratch slots relocation uses: the inner frame's offset, and saved X and A.
pub const M_BASE: u32 = 15;
const M_SAVE_X: u32 = 14;
const M_SAVE_A: u32 = 13;

/// One instruction as libpcap and the kernel hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    /// Parses pcap's `code jt jf k` rendering of one instruction.
    pub fn parse(s: &str) -> Option<Insn> {
        let mut it = s.split_whitespace();
        Some(Insn {
            code: it.next()?.parse().ok()?,
            jt: it.next()?.parse().ok()?,
            jf: it.next()?.parse().ok()?,
            k: it.next()?.parse().ok()?,
        })
    }

    /// `ret #0`: a program that matches nothing.
    pub fn reject() -> Insn {
        Insn {
            code: RET | K,
            jt: 0,
            jf: 0,
            k: 0,
        }
    }

    /// A load of the kernel's ancillary data (packet type, interface…), not of packet bytes.
    pub fn is_ancillary_load(self) -> bool {
        self.class() == LD && self.mode() == ABS && self.k >= SKF_AD_OFF
    }

    fn class(self) -> u16 {
        self.code & 0x07
    }
    fn mode(self) -> u16 {
        self.code & 0xe0
    }
}

/// Where a jump goes while a program is being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An instruction of the program being built.
    Index(usize),
    /// A label placed with [`Builder::label`].
    Label(&'static str),
}

/// An instruction being built; `jt`/`jf` mean something for jumps only (`ja` uses `jt`).
#[derive(Clone, Copy, Debug)]
struct Asm {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
}

/// The targets of an instruction that does not jump (never resolved).
const NO_JUMP: Target = Target::Index(0);

/// Why a program could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    #[error("a conditional jump spans {0} instructions (at most 255)")]
    TooFar(usize),
    #[error("{0} instructions (the kernel takes at most {MAX_INSNS})")]
    TooLong(usize),
    #[error("the program uses scratch memory M[{0}], which relocation needs")]
    ScratchInUse(u32),
    #[error("the program returns the accumulator; only constant returns can be joined")]
    ReturnsA,
    #[error("label {0} is not placed")]
    NoLabel(&'static str),
    #[error("{0}")]
    Unsupported(&'static str),
}

/// What a joined program's `ret #k` becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRet {
    /// Stays a return.
    Keep,
    /// Jumps to a target instead.
    Goto(Target),
}

/// Builds one program out of instructions and whole programs.
#[derive(Debug, Default)]
pub struct Builder {
    insns: Vec<Asm>,
    labels: HashMap<&'static str, usize>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Places `label` at the next instruction.
    pub fn label(&mut self, label: &'static str) {
        self.labels.insert(label, self.insns.len());
    }

    /// A non-jump instruction.
    pub fn op(&mut self, code: u16, k: u32) {
        self.insns.push(asm(code, k));
    }

    /// A conditional jump (`JMP | op | K`).
    pub fn jump(&mut self, op: u16, k: u32, jt: Target, jf: Target) {
        self.insns.push(Asm {
            code: JMP | op | K,
            k,
            jt,
            jf,
        });
    }

    /// A conditional jump comparing A with X (`JMP | op | X`).
    pub fn jump_x(&mut self, op: u16, jt: Target, jf: Target) {
        self.insns.push(Asm {
            code: JMP | op | X,
            k: 0,
            jt,
            jf,
        });
    }

    /// An unconditional jump (32-bit offset: any distance).
    pub fn goto(&mut self, to: Target) {
        self.insns.push(Asm {
            code: JMP | JA,
            k: 0,
            jt: to,
            jf: to,
        });
    }

    /// `ret #k`.
    pub fn ret(&mut self, k: u32) {
        self.op(RET | K, k);
    }

    /// The next instruction's index.
    pub fn here(&self) -> Target {
        Target::Index(self.insns.len())
    }

    /// Appends a whole program. Its `ret #k` with k > 0 (accept) become `accept`, with k = 0
    /// (reject) become `reject`. With `relocate`, every packet access reads relative to the
    /// offset in scratch slot [`M_BASE`] instead of the frame's start.
    pub fn program(
        &mut self,
        prog: &[Insn],
        accept: OnRet,
        reject: OnRet,
        relocate: bool,
    ) -> Result<(), BpfError> {
        let mut pieces: Vec<Vec<Asm>> = Vec::with_capacity(prog.len());
        for &i in prog {
            if relocate {
                check_scratch(i)?;
                pieces.push(relocated(i));
            } else {
                pieces.push(vec![plain(i)]);
            }
        }
        let base = self.insns.len();
        let mut starts = Vec::with_capacity(prog.len() + 1);
        let mut at = base;
        for p in &pieces {
            starts.push(at);
            at += p.len();
        }
        starts.push(at);
        let to = |old: usize| Target::Index(starts.get(old).copied().unwrap_or(at));
        for (idx, (i, piece)) in prog.iter().zip(pieces).enumerate() {
            self.insns.extend(piece);
            // The original instruction is the last of its piece: give its jumps their targets.
            let last = self.insns.len() - 1;
            match i.class() {
                JMP if i.code & 0xf0 == JA => {
                    let t = to(idx + 1 + i.k as usize);
                    self.insns[last].jt = t;
                    self.insns[last].jf = t;
                }
                JMP => {
                    self.insns[last].jt = to(idx + 1 + usize::from(i.jt));
                    self.insns[last].jf = to(idx + 1 + usize::from(i.jf));
                }
                RET => {
                    if i.code & 0x18 != 0 {
                        return Err(BpfError::ReturnsA);
                    }
                    let on = if i.k > 0 { accept } else { reject };
                    if let OnRet::Goto(t) = on {
                        self.insns[last] = Asm {
                            code: JMP | JA,
                            k: 0,
                            jt: t,
                            jf: t,
                        };
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Resolves every jump into classic BPF's relative offsets.
    pub fn assemble(self) -> Result<Vec<Insn>, BpfError> {
        if self.insns.len() > MAX_INSNS {
            return Err(BpfError::TooLong(self.insns.len()));
        }
        let resolve = |t: Target| -> Result<usize, BpfError> {
            match t {
                Target::Index(i) => Ok(i),
                Target::Label(l) => self.labels.get(l).copied().ok_or(BpfError::NoLabel(l)),
            }
        };
        let mut out = Vec::with_capacity(self.insns.len());
        for (i, a) in self.insns.iter().enumerate() {
            let mut insn = Insn {
                code: a.code,
                jt: 0,
                jf: 0,
                k: a.k,
            };
            if a.code & 0x07 == JMP {
                let rel = |t: Target| -> Result<usize, BpfError> {
                    // Jumps go forward only (classic BPF has no loops).
                    resolve(t)?
                        .checked_sub(i + 1)
                        .ok_or(BpfError::TooFar(usize::MAX))
                };
                if a.code & 0xf0 == JA {
                    insn.k = u32::try_from(rel(a.jt)?).map_err(|_| BpfError::TooLong(i))?;
                } else {
                    let (t, f) = (rel(a.jt)?, rel(a.jf)?);
                    insn.jt = u8::try_from(t).map_err(|_| BpfError::TooFar(t))?;
                    insn.jf = u8::try_from(f).map_err(|_| BpfError::TooFar(f))?;
                }
            }
            out.push(insn);
        }
        Ok(out)
    }
}

fn plain(i: Insn) -> Asm {
    asm(i.code, i.k)
}

fn asm(code: u16, k: u32) -> Asm {
    Asm {
        code,
        k,
        jt: NO_JUMP,
        jf: NO_JUMP,
    }
}

/// Relocation keeps its state in M[13..=15]: a program that touches them cannot be relocated.
fn check_scratch(i: Insn) -> Result<(), BpfError> {
    let uses_mem = match i.class() {
        LD | LDX => i.mode() == MEM,
        ST | STX => true,
        _ => false,
    };
    if uses_mem && (M_SAVE_A..=M_BASE).contains(&i.k) {
        return Err(BpfError::ScratchInUse(i.k));
    }
    Ok(())
}

/// One instruction of a program compiled for a frame at offset 0, rewritten to read the frame
/// at offset M[BASE]. Only packet accesses change; A and X are what the original would hold.
fn relocated(i: Insn) -> Vec<Asm> {
    let size = i.code & 0x18;
    match (i.class(), i.mode()) {
        // A = P[k]  →  A = P[BASE + k]
        (LD, ABS) if i.k < SKF_AD_OFF => vec![
            asm(STX, M_SAVE_X),
            asm(LDX | MEM, M_BASE),
            asm(LD | IND | size, i.k),
            asm(LDX | MEM, M_SAVE_X),
        ],
        // A = P[X + k]  →  A = P[BASE + X + k]
        (LD, IND) => vec![
            asm(STX, M_SAVE_X),
            asm(LD | MEM, M_BASE),
            asm(ALU | ADD | X, 0),
            asm(MISC | TAX, 0),
            asm(LD | IND | size, i.k),
            asm(LDX | MEM, M_SAVE_X),
        ],
        // X = 4 * (P[k] & 0xf)  →  the same at BASE + k, A kept
        (LDX, MSH) => vec![
            asm(ST, M_SAVE_A),
            asm(LDX | MEM, M_BASE),
            asm(LD | IND | B, i.k),
            asm(ALU | AND | K, 0x0f),
            asm(ALU | LSH | K, 2),
            asm(MISC | TAX, 0),
            asm(LD | MEM, M_SAVE_A),
        ],
        // A = len  →  A = len - BASE
        (LD, LEN) => vec![
            asm(STX, M_SAVE_X),
            asm(LDX | MEM, M_BASE),
            asm(LD | W | LEN, 0),
            asm(ALU | SUB | X, 0),
            asm(LDX | MEM, M_SAVE_X),
        ],
        // X = len  →  X = len - BASE, A kept
        (LDX, LEN) => vec![
            asm(ST, M_SAVE_A),
            asm(LD | W | LEN, 0),
            asm(LDX | MEM, M_BASE),
            asm(ALU | SUB | X, 0),
            asm(MISC | TAX, 0),
            asm(LD | MEM, M_SAVE_A),
        ],
        _ => vec![plain(i)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_resolves() {
        // `ret #1` from the first program goes to the second; the second's returns stay.
        let a = [Insn {
            code: RET | K,
            jt: 0,
            jf: 0,
            k: 1,
        }];
        let b = [
            Insn {
                code: LD | W | LEN,
                jt: 0,
                jf: 0,
                k: 0,
            },
            Insn {
                code: JMP | JEQ | K,
                jt: 0,
                jf: 1,
                k: 64,
            },
            Insn {
                code: RET | K,
                jt: 0,
                jf: 0,
                k: 9,
            },
            Insn {
                code: RET | K,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        let mut p = Builder::new();
        p.program(&a, OnRet::Goto(Target::Label("b")), OnRet::Keep, false)
            .unwrap();
        p.label("b");
        p.program(&b, OnRet::Keep, OnRet::Keep, false).unwrap();
        let out = p.assemble().unwrap();
        assert_eq!(out[0].code, JMP | JA);
        assert_eq!(out[0].k, 0);
        assert_eq!(&out[1..], &b);
    }

    #[test]
    fn relocation_rewrites_packet_loads_only() {
        let prog = [
            Insn {
                code: LD | H | ABS,
                jt: 0,
                jf: 0,
                k: 12,
            },
            Insn {
                code: JMP | JEQ | K,
                jt: 0,
                jf: 1,
                k: 0x800,
            },
            Insn {
                code: RET | K,
                jt: 0,
                jf: 0,
                k: 262_144,
            },
            Insn {
                code: RET | K,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        let mut p = Builder::new();
        p.program(&prog, OnRet::Keep, OnRet::Keep, true).unwrap();
        let out = p.assemble().unwrap();
        // 4 instructions for the load, then the jump — whose false branch skips the accept.
        assert_eq!(out.len(), 7);
        assert_eq!(out[2].code, LD | IND | H);
        assert_eq!(out[2].k, 12);
        assert_eq!((out[4].jt, out[4].jf), (0, 1));
        let mut p = Builder::new();
        let uses = [Insn {
            code: ST,
            jt: 0,
            jf: 0,
            k: M_BASE,
        }];
        assert_eq!(
            p.program(&uses, OnRet::Keep, OnRet::Keep, true),
            Err(BpfError::ScratchInUse(M_BASE))
        );
    }
}
