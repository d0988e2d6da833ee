//! KVM backend: the host's virtualization stack as an MMU oracle.
//!
//! One throw-away VM per image: guest memory (vm-memory mmap regions) holds
//! the image's ranges, one vCPU gets the image's CR0/CR3/CR4/EFER through
//! `KVM_SET_SREGS`, and
//!
//! * `translate` is `KVM_TRANSLATE` (a supervisor walk with no permission
//!   checks: the kernel hard-codes "writeable, not user");
//! * `probe` runs the same generated program as the QEMU probes
//!   ([`crate::probe`]) in a fresh VM (the shadow MMU of PVM, or of KVM
//!   without TDP, does not notice host-side table rewrites, so VMs are never
//!   reused across images). Loads from guest-physical addresses outside the
//!   memslots come back as MMIO exits and read as 0;
//! * `mappings` is unsupported (KVM has no mapping dump).
//!
//! Support is *detected*, never assumed: on this project's machines `/dev/kvm`
//! is PVM (paging-based, no VMX/SVM), which silently drops CR0.PG unless
//! EFER.LMA is set, so only long mode works there, and it has no 1 GiB pages
//! (such a leaf faults with RSVD and `KVM_TRANSLATE` reports it invalid).
//! [`KvmOracle::supports`] sets the registers and reads them back;
//! [`KvmOracle::has_1g_pages`] reads CPUID 0x80000001.EDX\[26\].

use crate::tlb::Mapping;
use crate::{Access, MmuOracle, OracleError, PagingImage, PagingMode, ProbeOutcome, Support};

/// Path of the KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use std::collections::HashMap;

    use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
    use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    use super::*;
    use crate::image::{CR0_PG, EFER_LMA, EFER_LME};
    use crate::probe::{self, Plan, MAX_BATCH};

    const MIB: u64 = 1 << 20;
    /// Largest total guest memory we map (lazily allocated).
    const MAX_LOW: u64 = 0xc000_0000;

    fn kerr(what: &str) -> impl Fn(kvm_ioctls::Error) -> OracleError + '_ {
        move |e| OracleError::Kvm(format!("{what}: {e}"))
    }

    /// One VM with one vCPU.
    struct Vm {
        // Field order matters for drop: vCPU and VM fds before the memory.
        vcpu: VcpuFd,
        _vm: VmFd,
        mem: GuestMemoryMmap,
        low: u64,
    }

    fn seg(selector: u16, ty: u8, long: bool, db: bool) -> kvm_segment {
        kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_: ty,
            present: 1,
            dpl: 0,
            db: u8::from(db),
            s: 1,
            l: u8::from(long),
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }

    /// Memory layout: one low region from 0 plus one region per high range.
    fn regions(img: &PagingImage, min_low: u64) -> Result<(u64, Vec<(u64, u64)>), OracleError> {
        let round_up = |v: u64| v.div_ceil(2 * MIB) * 2 * MIB;
        let mut low = min_low;
        let mut high: Vec<(u64, u64)> = Vec::new();
        for (gpa, bytes) in &img.data {
            let end = gpa.saturating_add(bytes.len() as u64);
            if end <= MAX_LOW {
                low = low.max(round_up(end));
            } else if *gpa >= MAX_LOW {
                high.push((gpa & !0xfff, (end + 0xfff) & !0xfff));
            } else {
                return Err(OracleError::Unsupported(format!(
                    "range at {gpa:#x} straddles {MAX_LOW:#x}"
                )));
            }
        }
        high.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in high {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut out = vec![(0, low)];
        out.extend(merged.into_iter().map(|(s, e)| (s, e - s)));
        Ok((low, out))
    }

    impl Vm {
        fn new(kvm: &Kvm, img: &PagingImage, min_low: u64) -> Result<Self, OracleError> {
            let (low, regs) = regions(img, min_low)?;
            let ranges: Vec<(GuestAddress, usize)> = regs
                .iter()
                .map(|&(g, l)| (GuestAddress(g), l as usize))
                .collect();
            let mem = GuestMemoryMmap::from_ranges(&ranges)
                .map_err(|e| OracleError::Spawn(format!("guest memory: {e}")))?;
            let vm = kvm.create_vm().map_err(kerr("create_vm"))?;
            for (slot, &(g, l)) in regs.iter().enumerate() {
                let host = mem
                    .get_host_address(GuestAddress(g))
                    .map_err(|e| OracleError::Spawn(format!("host address: {e}")))?;
                let region = kvm_userspace_memory_region {
                    slot: slot as u32,
                    flags: 0,
                    guest_phys_addr: g,
                    memory_size: l,
                    userspace_addr: host as u64,
                };
                // SAFETY: `host` points to `l` bytes mapped by `mem`, which
                // outlives the VM (`Vm` drops the fds before `mem`), and the
                // slots do not overlap (regions() merges them).
                unsafe { vm.set_user_memory_region(region) }
                    .map_err(kerr("set_user_memory_region"))?;
            }
            for (gpa, bytes) in &img.data {
                mem.write_slice(bytes, GuestAddress(*gpa))
                    .map_err(|e| OracleError::Spawn(format!("write image at {gpa:#x}: {e}")))?;
            }
            let vcpu = vm.create_vcpu(0).map_err(kerr("create_vcpu"))?;
            let cpuid = kvm
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .map_err(kerr("get_supported_cpuid"))?;
            vcpu.set_cpuid2(&cpuid).map_err(kerr("set_cpuid2"))?;
            Ok(Vm {
                vcpu,
                _vm: vm,
                mem,
                low,
            })
        }

        fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), OracleError> {
            self.mem
                .write_slice(bytes, GuestAddress(gpa))
                .map_err(|e| OracleError::Kvm(format!("guest write at {gpa:#x}: {e}")))
        }

        fn read(&self, gpa: u64, len: usize) -> Result<Vec<u8>, OracleError> {
            let mut v = vec![0u8; len];
            self.mem
                .read_slice(&mut v, GuestAddress(gpa))
                .map_err(|e| OracleError::Kvm(format!("guest read at {gpa:#x}: {e}")))?;
            Ok(v)
        }

        /// Set control registers and flat segments; returns the CR0 read back.
        fn set_paging(
            &self,
            img: &PagingImage,
            gdt: Option<(u64, u16)>,
        ) -> Result<u64, OracleError> {
            let d = &img.desc;
            let long = d.mode.is_long();
            let mut s = self.vcpu.get_sregs().map_err(kerr("get_sregs"))?;
            s.cs = if long {
                seg(0x18, 0xb, true, false)
            } else {
                seg(0x08, 0xb, false, true)
            };
            let data = seg(0x10, 0x3, false, true);
            s.ds = data;
            s.es = data;
            s.fs = data;
            s.gs = data;
            s.ss = data;
            if let Some((base, limit)) = gdt {
                s.gdt.base = base;
                s.gdt.limit = limit;
            }
            s.cr3 = d.cr3;
            s.cr4 = d.cr4;
            s.efer = if long { d.efer | EFER_LMA } else { d.efer };
            s.cr0 = d.cr0;
            self.vcpu.set_sregs(&s).map_err(kerr("set_sregs"))?;
            let g = self.vcpu.get_sregs().map_err(kerr("get_sregs"))?;
            if g.cr4 != d.cr4 {
                return Err(OracleError::Unsupported(format!(
                    "KVM changed CR4 {:#x} to {:#x}",
                    d.cr4, g.cr4
                )));
            }
            Ok(g.cr0)
        }
    }

    /// The KVM oracle.
    pub struct KvmOracle {
        kvm: Option<Kvm>,
        open_error: String,
        support: HashMap<PagingMode, Support>,
        image: Option<PagingImage>,
        vm: Option<Vm>,
    }

    impl KvmOracle {
        /// Open `/dev/kvm` (failure is reported by [`MmuOracle::supports`]).
        pub fn new() -> Self {
            let (kvm, open_error) = match Kvm::new() {
                Ok(k) => (Some(k), String::new()),
                Err(e) => (None, format!("cannot open {KVM_DEVICE}: {e}")),
            };
            KvmOracle {
                kvm,
                open_error,
                support: HashMap::new(),
                image: None,
                vm: None,
            }
        }

        /// Whether `/dev/kvm` could be opened.
        pub fn available(&self) -> bool {
            self.kvm.is_some()
        }

        fn kvm(&self) -> Result<&Kvm, OracleError> {
            self.kvm
                .as_ref()
                .ok_or_else(|| OracleError::Unsupported(self.open_error.clone()))
        }

        /// Whether the guest CPUID offers 1 GiB pages (PDPE1GB).
        pub fn has_1g_pages(&self) -> bool {
            self.cpuid(0x8000_0001)
                .is_some_and(|(_, _, _, edx)| edx & (1 << 26) != 0)
        }

        /// MAXPHYADDR the guest sees (CPUID 0x80000008.EAX\[7:0\]), if known.
        pub fn maxphyaddr(&self) -> Option<u32> {
            self.cpuid(0x8000_0008)
                .map(|(eax, _, _, _)| eax & 0xff)
                .filter(|&m| m > 0)
        }

        fn cpuid(&self, function: u32) -> Option<(u32, u32, u32, u32)> {
            let c = self
                .kvm
                .as_ref()?
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .ok()?;
            c.as_slice()
                .iter()
                .find(|e| e.function == function && e.index == 0)
                .map(|e| (e.eax, e.ebx, e.ecx, e.edx))
        }

        fn detect(&self, mode: PagingMode) -> Support {
            let Some(kvm) = self.kvm.as_ref() else {
                return Support::No(self.open_error.clone());
            };
            if mode == PagingMode::FiveLevel
                && self
                    .cpuid(7)
                    .is_none_or(|(_, _, ecx, _)| ecx & (1 << 16) == 0)
            {
                return Support::No("KVM's CPUID has no LA57".into());
            }
            // A trivial image: a zeroed top-level table at 0x1000.
            let mut img = PagingImage::new(mode, 0x1000);
            img.add_frame(0x1000);
            let vm = match Vm::new(kvm, &img, 2 * MIB) {
                Ok(v) => v,
                Err(e) => return Support::No(format!("cannot create a VM: {e}")),
            };
            match vm.set_paging(&img, None) {
                Ok(cr0) if cr0 & CR0_PG != 0 => Support::Yes,
                Ok(cr0) => Support::No(format!(
                    "KVM dropped CR0.PG (reads back {cr0:#x}): PVM runs only long mode"
                )),
                Err(e) => Support::No(e.to_string()),
            }
        }

        fn new_vm(&self, img: &PagingImage, min_low: u64) -> Result<Vm, OracleError> {
            Vm::new(self.kvm()?, img, min_low)
        }
    }

    impl Default for KvmOracle {
        fn default() -> Self {
            Self::new()
        }
    }

    impl MmuOracle for KvmOracle {
        fn name(&self) -> &str {
            "kvm"
        }

        fn supports(&mut self, mode: PagingMode) -> Support {
            if let Some(s) = self.support.get(&mode) {
                return s.clone();
            }
            let s = self.detect(mode);
            self.support.insert(mode, s.clone());
            s
        }

        fn load(&mut self, img: &PagingImage) -> Result<(), OracleError> {
            img.validate()?;
            self.vm = None;
            self.image = None;
            if let Support::No(why) = self.supports(img.desc.mode) {
                return Err(OracleError::Unsupported(why));
            }
            if img.desc.mode.is_long() && img.desc.efer & EFER_LME == 0 {
                return Err(OracleError::Unsupported(
                    "long mode image without EFER.LME".into(),
                ));
            }
            let vm = self.new_vm(img, 16 * MIB)?;
            let cr0 = vm.set_paging(img, None)?;
            if cr0 & CR0_PG == 0 {
                return Err(OracleError::Unsupported("KVM dropped CR0.PG".into()));
            }
            self.vm = Some(vm);
            self.image = Some(img.clone());
            Ok(())
        }

        fn translate(&mut self, va: u64) -> Result<Option<u64>, OracleError> {
            let vm = self.vm.as_ref().ok_or(OracleError::NotLoaded)?;
            let t = vm.vcpu.translate_gva(va).map_err(kerr("translate_gva"))?;
            Ok((t.valid != 0).then_some(t.physical_address))
        }

        fn mappings(&mut self) -> Result<Vec<Mapping>, OracleError> {
            Err(OracleError::Unsupported(
                "KVM has no mapping dump; use the QEMU oracle".into(),
            ))
        }

        fn probe(&mut self, accesses: &[Access]) -> Result<Vec<ProbeOutcome>, OracleError> {
            let img = self.image.as_ref().ok_or(OracleError::NotLoaded)?;
            if accesses.is_empty() {
                return Ok(Vec::new());
            }
            let long = img.desc.mode.is_long();
            // Physical addresses of exec targets, from the translate VM.
            let mut exec_pa = HashMap::new();
            if let Some(vm) = self.vm.as_ref() {
                for a in accesses
                    .iter()
                    .filter(|a| a.kind == crate::AccessKind::Exec)
                {
                    if let Ok(t) = vm.vcpu.translate_gva(a.va) {
                        if t.valid != 0 {
                            exec_pa.insert(a.va, t.physical_address);
                        }
                    }
                }
            }
            // Leave room above the image (it may be a whole RAM dump).
            let low_end = img
                .data
                .iter()
                .map(|(g, b)| g + b.len() as u64)
                .filter(|&e| e <= MAX_LOW - 8 * MIB)
                .max()
                .unwrap_or(0);
            let mut vm = self.new_vm(img, (64 * MIB).max(low_end + 4 * MIB))?;
            let low = vm.low;
            let usable = move |f: u64| f + 4096 <= low;
            let plan: Plan = probe::plan(img, accesses, &usable, false)?;
            for (gpa, bytes) in &plan.writes {
                vm.write(*gpa, bytes)?;
            }
            let cr0 = vm.set_paging(img, Some((plan.window, 0x4f)))?;
            if cr0 & CR0_PG == 0 {
                return Err(OracleError::Unsupported("KVM dropped CR0.PG".into()));
            }
            let frame = |page: u64| plan.frames[page as usize];
            let stub = plan.exec_stub();
            let mut out = Vec::with_capacity(accesses.len());
            for batch in accesses.chunks(MAX_BATCH) {
                for a in batch.iter().filter(|a| a.kind == crate::AccessKind::Exec) {
                    if let Some(&pa) = exec_pa.get(&a.va) {
                        let _ = vm.mem.write_slice(&stub, GuestAddress(pa));
                    }
                }
                let enc = probe::encode_batch(batch);
                let res_gpa = |i: usize| frame(7 + (i * 32 / 4096) as u64) + (i * 32 % 4096) as u64;
                let desc_gpa =
                    |i: usize| frame(5 + (i * 32 / 4096) as u64) + (i * 32 % 4096) as u64;
                for (i, chunk) in enc.chunks(32).enumerate() {
                    vm.mem
                        .write_slice(chunk, GuestAddress(desc_gpa(i)))
                        .map_err(|e| OracleError::Kvm(e.to_string()))?;
                    vm.mem
                        .write_slice(&[0u8; 32], GuestAddress(res_gpa(i)))
                        .map_err(|e| OracleError::Kvm(e.to_string()))?;
                }
                let mut ctrl = (batch.len() as u64).to_le_bytes().to_vec();
                ctrl.extend_from_slice(&[0u8; 8]);
                vm.mem
                    .write_slice(&ctrl, GuestAddress(frame(4)))
                    .map_err(|e| OracleError::Kvm(e.to_string()))?;
                let regs = kvm_regs {
                    rip: plan.entry,
                    rflags: 2,
                    rsp: plan.window + 4 * 4096 - 64,
                    ..Default::default()
                };
                vm.vcpu.set_regs(&regs).map_err(kerr("set_regs"))?;
                let mut exits = 0u32;
                loop {
                    exits += 1;
                    if exits > 100_000 {
                        return Err(OracleError::Timeout("probe program: too many exits".into()));
                    }
                    match vm.vcpu.run().map_err(kerr("run"))? {
                        VcpuExit::Hlt => break,
                        VcpuExit::MmioRead(_, data) => data.fill(0),
                        VcpuExit::MmioWrite(..) => {}
                        VcpuExit::IoIn(_, data) => data.fill(0),
                        VcpuExit::IoOut(..) => {}
                        VcpuExit::Shutdown => {
                            return Err(OracleError::Guest("triple fault (KVM shutdown)".into()))
                        }
                        other => {
                            return Err(OracleError::Guest(format!("unexpected exit {other:?}")))
                        }
                    }
                }
                let rip = vm.vcpu.get_regs().map_err(kerr("get_regs"))?.rip;
                if rip != plan.done + 1 {
                    return Err(OracleError::Guest(format!(
                        "probe program halted at {rip:#x}, expected {:#x}",
                        plan.done + 1
                    )));
                }
                let mut res = Vec::with_capacity(batch.len() * 32);
                for i in 0..batch.len() {
                    res.extend(vm.read(res_gpa(i), 32)?);
                }
                out.extend(probe::decode_results(&res, batch, long)?);
            }
            Ok(out)
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use imp::KvmOracle;

/// Stand-in on hosts without KVM: supports nothing.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
#[derive(Default)]
pub struct KvmOracle;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
impl KvmOracle {
    /// Always unavailable here.
    pub fn new() -> Self {
        KvmOracle
    }
    /// Always false here.
    pub fn available(&self) -> bool {
        false
    }
    /// Always false here.
    pub fn has_1g_pages(&self) -> bool {
        false
    }
    /// Unknown here.
    pub fn maxphyaddr(&self) -> Option<u32> {
        None
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
impl MmuOracle for KvmOracle {
    fn name(&self) -> &str {
        "kvm"
    }
    fn supports(&mut self, _mode: PagingMode) -> Support {
        Support::No("KVM backend needs Linux on x86_64".into())
    }
    fn load(&mut self, _img: &PagingImage) -> Result<(), OracleError> {
        Err(OracleError::Unsupported(
            "KVM backend needs Linux on x86_64".into(),
        ))
    }
    fn translate(&mut self, _va: u64) -> Result<Option<u64>, OracleError> {
        Err(OracleError::NotLoaded)
    }
    fn mappings(&mut self) -> Result<Vec<Mapping>, OracleError> {
        Err(OracleError::NotLoaded)
    }
    fn probe(&mut self, _accesses: &[Access]) -> Result<Vec<ProbeOutcome>, OracleError> {
        Err(OracleError::NotLoaded)
    }
}
