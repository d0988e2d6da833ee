//! Our software MMU against a hardware oracle, on one image.
//!
//! Two questions are asked of the oracle's *debug walk* (no permission or
//! reserved-bit checks, so neither is ours):
//!
//! 1. for every address of interest: where does a supervisor read go?
//!    (`gva2gpa` vs [`x86paging::translate`] on the image's own bytes);
//! 2. the whole mapping list (`info tlb`: va, pa, size, leaf flags) vs every
//!    leaf our table walk finds.
//!
//! And one of *real execution* ([`compare_probes`]): each access the
//! generator proposes (supervisor/user × read/write/fetch) is performed by a
//! probe program on the oracle's CPU, and its outcome (done, or #PF with
//! CR2 and error code) must be what our walker predicts — permissions,
//! reserved bits, NX and all.
//!
//! Cases come from the pgd system ([`crate::scenario`]) or from the random
//! generator [`x86paging::gen`] ([`GenCase`]: 40 mappings, MAXPHYADDR 40
//! as QEMU's `-cpu max`, or the host CPU's for KVM). `tests/differential.rs`
//! and `pgdcache oracle` both run on these functions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use oracle::{Access, AccessKind, MmuOracle, OracleError, PagingImage, ProbeOutcome};
use physmem::{PhysAddr, PhysMem, PhysMemory, Ram, VirtAddr};
use x86paging::gen::{generate, GenConfig, Generated};
use x86paging::{CpuState, EntryFlags, PagingMode, WalkFault};

use crate::scenario::{export_image, Leaf, ScenarioError};

/// MAXPHYADDR of QEMU's TCG `-cpu max` (phys-bits defaults to 40).
pub const QEMU_MAXPHYADDR: u32 = 40;
/// Simulated RAM for generated cases.
pub const GEN_RAM: u64 = 16 << 20;

/// One point where our walker and the oracle disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// Which case ("4level gen seed 7", "pae fork slab-pgd-list").
    pub case: String,
    /// What differs.
    pub what: String,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.case, self.what)
    }
}

/// Counts of one or more comparisons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Addresses whose translation was compared.
    pub addresses: usize,
    /// Mappings (leaves) compared against `info tlb`.
    pub mappings: usize,
    /// Accesses performed for real and compared with the walker's verdict.
    pub probes: usize,
    /// Everything that differed.
    pub disagreements: Vec<Disagreement>,
}

impl DiffReport {
    /// Adds `other`'s counts and disagreements to `self`.
    pub fn merge(&mut self, other: DiffReport) {
        self.addresses += other.addresses;
        self.mappings += other.mappings;
        self.probes += other.probes;
        self.disagreements.extend(other.disagreements);
    }
}

/// Compares supervisor-read translations of `vas`: our walker over `pm`
/// with `cpu` vs `o.translate` (the image must already be loaded).
/// Addresses our walker answers with something other than a translation or
/// a not-present fault (non-canonical, reserved bits, tables outside the
/// image) are not debug-walk questions and are skipped — except that for
/// KVM, whose walker honours reserved bits, a reserved-bit fault means
/// "no translation".
pub fn compare_translations<P: PhysMem + ?Sized>(
    o: &mut dyn MmuOracle,
    pm: &P,
    cpu: &CpuState,
    vas: &[u64],
    case: &str,
) -> Result<DiffReport, OracleError> {
    let mut r = DiffReport::default();
    let kvm = o.name() == "kvm";
    let mut asked = Vec::with_capacity(vas.len());
    let mut ours = Vec::with_capacity(vas.len());
    for &va in vas {
        let w = match x86paging::translate(pm, cpu, VirtAddr::new(va), x86paging::Access::READ) {
            Ok(t) => Some(t.pa.as_u64()),
            Err(WalkFault::PageFault { code, .. }) if code.bits() & 1 == 0 => None,
            Err(WalkFault::PageFault { .. }) if kvm => None,
            Err(_) => continue,
        };
        asked.push(va);
        ours.push(w);
    }
    // The oracle answers all at once (QEMU pipelines the requests); our
    // walker's answers were fixed above, before any of its answers arrived.
    let theirs = o.translate_many(&asked)?;
    r.addresses = asked.len();
    for ((va, ours), theirs) in asked.iter().zip(ours).zip(theirs) {
        if ours != theirs {
            r.disagreements.push(Disagreement {
                case: case.to_string(),
                what: format!("{va:#x}: walker {ours:#x?}, {} {theirs:#x?}", o.name()),
            });
        }
    }
    Ok(r)
}

fn mapping_key(m: &oracle::Mapping) -> String {
    let f = m.flags;
    key(
        m.va,
        m.pa,
        m.size,
        [
            f.writable, f.user, f.nx, f.global, f.accessed, f.dirty, f.pcd, f.pwt,
        ],
    )
}

fn key(va: u64, pa: u64, size: u64, bits: [bool; 8]) -> String {
    let b = |i: usize| u8::from(bits[i]);
    format!(
        "{va:#x} -> {pa:#x} size {size:#x} W{} U{} X{} G{} A{} D{} C{} T{}",
        b(0),
        b(1),
        b(2),
        b(3),
        b(4),
        b(5),
        b(6),
        b(7)
    )
}

fn leaf_key(l: &Leaf) -> String {
    let f = l.flags;
    key(
        l.va,
        l.pa,
        l.size.bytes(),
        [
            f.contains(EntryFlags::RW),
            f.contains(EntryFlags::USER),
            f.contains(EntryFlags::NX),
            f.contains(EntryFlags::GLOBAL),
            f.contains(EntryFlags::ACCESSED),
            f.contains(EntryFlags::DIRTY),
            f.contains(EntryFlags::PCD),
            f.contains(EntryFlags::PWT),
        ],
    )
}

/// Compares `ours` (every leaf, with leaf flags) with the oracle's whole
/// mapping list. Returns an empty report (0 mappings) when the backend has
/// no mapping dump (KVM).
pub fn compare_mappings(
    o: &mut dyn MmuOracle,
    ours: &[Leaf],
    case: &str,
) -> Result<DiffReport, OracleError> {
    let theirs = match o.mappings() {
        Ok(m) => m,
        Err(OracleError::Unsupported(_)) => return Ok(DiffReport::default()),
        Err(e) => return Err(e),
    };
    let a: BTreeSet<String> = ours.iter().map(leaf_key).collect();
    let b: BTreeSet<String> = theirs.iter().map(mapping_key).collect();
    let mut r = DiffReport {
        mappings: a.len().max(b.len()),
        ..DiffReport::default()
    };
    for x in a.difference(&b) {
        r.disagreements.push(Disagreement {
            case: case.to_string(),
            what: format!("only in our walk: {x}"),
        });
    }
    for x in b.difference(&a) {
        r.disagreements.push(Disagreement {
            case: case.to_string(),
            what: format!("only in {}'s mapping list: {x}", o.name()),
        });
    }
    Ok(r)
}

/// Loads `img` into `o` and runs both comparisons. `pm`/`cpu` are what our
/// walker reads (normally an [`crate::ImageMem`] of `img`).
pub fn check_image<P: PhysMem + ?Sized>(
    o: &mut dyn MmuOracle,
    img: &PagingImage,
    pm: &P,
    cpu: &CpuState,
    vas: &[u64],
    ours: &[Leaf],
    case: &str,
) -> Result<DiffReport, OracleError> {
    o.load(img)?;
    let mut r = compare_translations(o, pm, cpu, vas, case)?;
    r.merge(compare_mappings(o, ours, case)?);
    Ok(r)
}

/// What one MMU sees of the kernel half through one CR3: the supervisor-read
/// translation of each address of interest, and every leaf mapping (va, pa,
/// size, leaf flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelView {
    /// `va -> pa` (None: no translation).
    pub translations: BTreeMap<u64, Option<u64>>,
    /// Leaf mappings, as comparison keys, by linear address.
    pub mappings: BTreeMap<u64, String>,
}

impl KernelView {
    /// Our walker's view over `pm` with `cpu`, of the addresses of `vas` at
    /// or above `kernel_start` (faults other than not-present count as "no
    /// translation").
    pub fn walker<P: PhysMem + ?Sized>(
        pm: &P,
        cpu: &CpuState,
        vas: &[u64],
        kernel_start: u64,
    ) -> Self {
        let translations = vas
            .iter()
            .filter(|&&va| va >= kernel_start)
            .map(|&va| {
                let t = x86paging::translate(pm, cpu, VirtAddr::new(va), x86paging::Access::READ);
                (va, t.ok().map(|t| t.pa.as_u64()))
            })
            .collect();
        let mappings = crate::scenario::leaves(pm, cpu)
            .iter()
            .filter(|l| l.va >= kernel_start)
            .map(|l| (l.va, leaf_key(l)))
            .collect();
        KernelView {
            translations,
            mappings,
        }
    }

    /// The oracle's view of the loaded image (`translate` per address,
    /// `mappings` where the backend has them).
    pub fn oracle(
        o: &mut dyn MmuOracle,
        vas: &[u64],
        kernel_start: u64,
    ) -> Result<Self, OracleError> {
        let kvas: Vec<u64> = vas
            .iter()
            .copied()
            .filter(|&va| va >= kernel_start)
            .collect();
        let translations = kvas.iter().copied().zip(o.translate_many(&kvas)?).collect();
        let mappings = match o.mappings() {
            Ok(m) => m
                .iter()
                .filter(|m| m.va >= kernel_start)
                .map(|m| (m.va, mapping_key(m)))
                .collect(),
            Err(OracleError::Unsupported(_)) => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(KernelView {
            translations,
            mappings,
        })
    }

    /// Where `self` (named `a`) and `other` (named `b`) differ.
    pub fn compare(&self, other: &KernelView, a: &str, b: &str, case: &str) -> DiffReport {
        let mut r = DiffReport {
            addresses: self.translations.len(),
            mappings: self.mappings.len().max(other.mappings.len()),
            ..DiffReport::default()
        };
        let mut push = |what: String| {
            r.disagreements.push(Disagreement {
                case: case.to_string(),
                what,
            })
        };
        let pa = |x: &Option<u64>| x.map_or("unmapped".to_string(), |p| format!("{p:#x}"));
        for (va, x) in &self.translations {
            match other.translations.get(va) {
                Some(y) if y == x => {}
                Some(y) => push(format!("{va:#x}: {a} -> {}, {b} -> {}", pa(x), pa(y))),
                None => push(format!("{va:#x}: {a} -> {}, not asked of {b}", pa(x))),
            }
        }
        let (ka, kb): (BTreeSet<&String>, BTreeSet<&String>) = (
            self.mappings.values().collect(),
            other.mappings.values().collect(),
        );
        for x in ka.difference(&kb) {
            push(format!("only in {a}'s mappings: {x}"));
        }
        for x in kb.difference(&ka) {
            push(format!("only in {b}'s mappings: {x}"));
        }
        r
    }

    /// Linear addresses (translations and mapping starts) where `self` and
    /// `other` differ.
    pub fn differing_addresses(&self, other: &KernelView) -> BTreeSet<u64> {
        let mut out: BTreeSet<u64> = self
            .translations
            .iter()
            .filter(|(va, x)| other.translations.get(va) != Some(x))
            .map(|(va, _)| *va)
            .collect();
        let differs = |a: &KernelView, b: &KernelView| {
            a.mappings
                .iter()
                .filter(|(va, k)| b.mappings.get(va) != Some(k))
                .map(|(va, _)| *va)
                .collect::<Vec<u64>>()
        };
        out.extend(differs(self, other));
        out.extend(differs(other, self));
        out
    }
}

/// The oracle's verdicts on every root of a multi-root image.
#[derive(Clone, Debug, Default)]
pub struct RootsReport {
    /// Our walker vs the oracle, on every root (must be empty).
    pub walker: DiffReport,
    /// Per root other than the reference: the oracle's view of it vs its
    /// view of the reference root (`swapper_pg_dir`), kernel half only.
    pub vs_reference: Vec<(String, DiffReport)>,
    /// Per root other than the reference: the linear addresses where the
    /// oracle's two views differ.
    pub differing: Vec<(String, BTreeSet<u64>)>,
    /// Roots loaded.
    pub roots: usize,
}

impl RootsReport {
    /// Roots whose kernel half the oracle saw differ from the reference's.
    pub fn roots_differing(&self) -> usize {
        self.vs_reference
            .iter()
            .filter(|(_, r)| !r.disagreements.is_empty())
            .count()
    }
}

/// Loads `img` once per root (`(name, cr3)`, the reference first) and asks
/// the oracle for each: (1) our walker over `pm` with `cpu` on that root
/// must agree with it (translations of `vas` and the whole mapping list,
/// as [`check_image`]); (2) its kernel half (addresses at or above
/// `kernel_start`) compared with the reference root's, as the oracle sees
/// both — where a cached pgd missed a conversion, the hardware walk of
/// that pgd differs from `swapper_pg_dir`'s.
#[allow(clippy::too_many_arguments)]
pub fn check_roots<P: PhysMem + ?Sized>(
    o: &mut dyn MmuOracle,
    img: &PagingImage,
    pm: &P,
    cpu: &CpuState,
    roots: &[(String, PhysAddr)],
    vas: &[u64],
    kernel_start: u64,
    case: &str,
) -> Result<RootsReport, OracleError> {
    let mut rep = RootsReport::default();
    let mut reference: Option<(String, KernelView)> = None;
    for (name, pgd) in roots {
        let c = cpu.with_cr3(*pgd);
        let case = format!("{case} on {name}");
        o.load(&img.with_cr3(c.cr_values().cr3))?;
        let ours = crate::scenario::leaves(pm, &c);
        rep.walker
            .merge(compare_translations(o, pm, &c, vas, &case)?);
        rep.walker.merge(compare_mappings(o, &ours, &case)?);
        let view = KernelView::oracle(o, vas, kernel_start)?;
        rep.roots += 1;
        match &reference {
            None => reference = Some((name.clone(), view)),
            Some((rname, rview)) => {
                rep.vs_reference
                    .push((name.clone(), view.compare(rview, name, rname, &case)));
                rep.differing
                    .push((name.clone(), view.differing_addresses(rview)));
            }
        }
    }
    Ok(rep)
}

/// A random page table from [`x86paging::gen`], exported.
pub struct GenCase {
    /// Simulated RAM holding the tables.
    pub pm: PhysMemory<Ram>,
    /// What the generator made.
    pub gen: Generated,
    /// The exported image.
    pub img: PagingImage,
    /// Addresses of interest.
    pub vas: Vec<u64>,
}

impl GenCase {
    /// Generates case `seed` for `mode` (40 mappings, large pages, high
    /// physical addresses, MAXPHYADDR `maxphyaddr`).
    pub fn new(mode: PagingMode, seed: u64, maxphyaddr: u32) -> Result<Self, ScenarioError> {
        let pm = PhysMemory::new(GEN_RAM).map_err(|e| ScenarioError::Ram(e.to_string()))?;
        let cfg = GenConfig {
            mappings: 40,
            maxphyaddr,
            ..GenConfig::new(mode, seed)
        };
        let gen = generate(&pm, &cfg).map_err(|e| ScenarioError::Ram(e.to_string()))?;
        let img = export_image(&pm, &gen.cpu)?;
        let vas = interesting(&gen, seed);
        Ok(GenCase { pm, gen, img, vas })
    }

    /// The generator's mappings as leaves.
    pub fn leaves(&self) -> Vec<Leaf> {
        self.gen
            .mappings
            .iter()
            .map(|m| Leaf {
                va: m.va.as_u64(),
                pa: m.pa.as_u64(),
                size: m.size,
                flags: m.flags,
            })
            .collect()
    }
}

/// What our walker says a real access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The access completes.
    Ok,
    /// #PF with this error code (CR2 = the access's address).
    Fault(u64),
}

impl Walk {
    /// True if the oracle's outcome `got` for an access at `va` is this.
    pub fn matches(self, va: u64, got: &ProbeOutcome) -> bool {
        match (self, got) {
            (Walk::Ok, ProbeOutcome::Ok(_)) => true,
            (Walk::Fault(code), ProbeOutcome::PageFault { cr2, error_code }) => {
                *cr2 == va && *error_code == code
            }
            _ => false,
        }
    }
}

/// Our walker's verdict on access `a` with `cpu`: `None` if it raises
/// something other than #PF (#GP for a non-canonical address) or the walk
/// leaves memory — not comparable with a probe.
pub fn walker_probe<P: PhysMem + ?Sized>(pm: &P, cpu: &CpuState, a: &Access) -> Option<Walk> {
    let kind = match a.kind {
        AccessKind::Read => x86paging::AccessKind::Read,
        AccessKind::Write => x86paging::AccessKind::Write,
        AccessKind::Exec => x86paging::AccessKind::Execute,
    };
    let access = x86paging::Access { kind, user: a.user };
    match x86paging::translate(pm, cpu, VirtAddr::new(a.va), access) {
        Ok(_) => Some(Walk::Ok),
        Err(WalkFault::PageFault { code, .. }) => Some(Walk::Fault(u64::from(code.bits()))),
        Err(_) => None,
    }
}

/// Performs `accesses` for real on the oracle (the image must already be
/// loaded) and compares each outcome with our walker's verdict over `pm`
/// with `cpu`. Returns the report and every (access, outcome) pair, so a
/// caller can also judge a deliberately wrong walker against them.
pub fn compare_probes<P: PhysMem + ?Sized>(
    o: &mut dyn MmuOracle,
    pm: &P,
    cpu: &CpuState,
    accesses: &[Access],
    case: &str,
) -> Result<(DiffReport, Vec<(Access, ProbeOutcome)>), OracleError> {
    let mut r = DiffReport::default();
    let got = o.probe(accesses)?;
    for (a, g) in accesses.iter().zip(&got) {
        let Some(w) = walker_probe(pm, cpu, a) else {
            continue;
        };
        r.probes += 1;
        if !w.matches(a.va, g) {
            r.disagreements.push(Disagreement {
                case: case.to_string(),
                what: format!("{a:x?}: walker {w:x?}, {} {g}", o.name()),
            });
        }
    }
    Ok((r, accesses.iter().copied().zip(got).collect()))
}

/// The exec stub is at most 12 bytes; fetch targets stay 16 bytes apart.
const STUB_SPAN: u64 = 16;

impl GenCase {
    /// The generator's accesses (supervisor/user × read/write/fetch, 8
    /// unmapped addresses) that are safe to perform for real: no store or
    /// fetch into a page-table frame or device memory, fetch targets in RAM
    /// outside the BIOS hole and not overlapping each other. Returns the
    /// data accesses and the fetches (two probe batches).
    pub fn safe_probes(&self, seed: u64) -> (Vec<Access>, Vec<Access>) {
        let tables = oracle::probe::table_frames(&self.img);
        let (mut data, mut fetch, mut stubs) = (Vec::new(), Vec::new(), Vec::<u64>::new());
        for p in self.gen.probes(seed, 8) {
            let va = p.va.as_u64();
            let kind = match p.access.kind {
                x86paging::AccessKind::Read => AccessKind::Read,
                x86paging::AccessKind::Write => AccessKind::Write,
                x86paging::AccessKind::Execute => AccessKind::Exec,
            };
            let a = Access {
                va,
                kind,
                user: p.access.user,
                value: 0x5a5a_5a5a,
            };
            let target = self
                .gen
                .mapping_of(p.va)
                .map(|m| m.pa.as_u64() + (va - m.va.as_u64()));
            if let (AccessKind::Write | AccessKind::Exec, Some(pa)) = (kind, target) {
                let frames = [pa & !0xfff, (pa + STUB_SPAN - 1) & !0xfff];
                if frames.iter().any(|f| tables.contains(f)) || (0xfec0_0000..1 << 32).contains(&pa)
                {
                    continue;
                }
                if kind == AccessKind::Exec {
                    if pa + STUB_SPAN > GEN_RAM || (0xa_0000..0x10_0000).contains(&pa) {
                        continue;
                    }
                    if stubs
                        .iter()
                        .any(|&s| s != pa && s < pa + STUB_SPAN && pa < s + STUB_SPAN)
                    {
                        continue;
                    }
                    stubs.push(pa);
                }
            }
            if kind == AccessKind::Exec {
                fetch.push(a);
            } else {
                data.push(a);
            }
        }
        (data, fetch)
    }
}

/// Start, a random inside address, last byte and the byte after each
/// mapping, plus 16 random probes.
fn interesting(gen: &Generated, seed: u64) -> Vec<u64> {
    let mut vas = Vec::new();
    let mut rng = x86paging::gen::Rng::new(seed ^ 0x5eed);
    let mode = gen.cpu.mode;
    for m in &gen.mappings {
        let (va, size) = (m.va.as_u64(), m.size.bytes());
        vas.push(va);
        vas.push(va + (rng.below(size) & !7));
        vas.push(va + size - 1);
        vas.push(mode.canonicalize(va.wrapping_add(size)).as_u64());
    }
    for p in gen.probes(seed, 16) {
        vas.push(p.va.as_u64());
    }
    vas.retain(|&v| mode.is_64bit() || v < 1 << 32);
    vas.sort_unstable();
    vas.dedup();
    vas
}
