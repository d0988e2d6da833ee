//! Running a probe [`Plan`] on a QEMU [`Session`]: boot the 16-bit stub from
//! real mode to the breakpoint, turn paging on with the image's registers,
//! then for each batch write the access table, continue to the program's
//! final `hlt` and read the results back. The plan and the program come from
//! [`crate::probe`], which knows nothing of QEMU; this module is the only
//! place that drives a session for probes.
//!
//! Every byte the guest will execute (stub, program, fetch stubs) is written
//! through the gdbstub, never into shared RAM directly: gdbstub writes
//! invalidate QEMU's translated blocks, so a block translated for an earlier
//! image on the same session can never run again.

use std::time::Duration;

use super::session::Session;
use crate::image::PagingImage;
use crate::probe::{decode_results, encode_batch, Plan, MAX_BATCH, SEL_CODE64};
use crate::{Access, AccessKind, OracleError, ProbeOutcome};

/// Runs `accesses` as `plan` says on `s`, whose RAM holds `img` and nothing
/// else, with paging off (a fresh or [`Session::reset`] session).
pub(super) fn run(
    s: &mut Session,
    img: &PagingImage,
    plan: &Plan,
    accesses: &[Access],
    run_timeout: Duration,
) -> Result<Vec<ProbeOutcome>, OracleError> {
    let long = img.desc.mode.is_long();
    for (gpa, bytes) in &plan.writes {
        s.gdb.write_mem(*gpa, bytes)?;
    }
    // Real mode: CS base = selector << 4.
    s.set_reg("cs", plan.stub >> 4)?;
    s.set_reg("rip", 0)?;
    run_to(s, plan.stub_done, run_timeout)?;
    s.enable_paging(img)?;
    if long {
        s.set_reg("cs", u64::from(SEL_CODE64))?;
    }
    s.gdb.command_ok(&format!("Z0,{:x},1", plan.done))?;
    let mut out = Vec::with_capacity(accesses.len());
    let stub = plan.exec_stub();
    for batch in accesses.chunks(MAX_BATCH) {
        for a in batch.iter().filter(|a| a.kind == AccessKind::Exec) {
            // Best effort: an unmapped target faults before reaching it.
            let _ = s.gdb.write_mem(a.va, &stub);
        }
        s.gdb.write_mem(plan.table_va(), &encode_batch(batch))?;
        s.gdb
            .write_mem(plan.results_va(), &vec![0u8; batch.len() * 32])?;
        let mut ctrl = (batch.len() as u64).to_le_bytes().to_vec();
        ctrl.extend_from_slice(&[0u8; 8]);
        s.gdb.write_mem(plan.ctrl_va(), &ctrl)?;
        s.set_reg("rip", plan.entry)?;
        let stop = s.gdb.cont(run_timeout)?;
        check_stop(&stop)?;
        let rip = s.get_reg("rip")?;
        if rip != plan.done {
            return Err(OracleError::Guest(format!(
                "probe program stopped at {rip:#x}, expected {:#x}",
                plan.done
            )));
        }
        let res = s.gdb.read_mem(plan.results_va(), batch.len() * 32)?;
        out.extend(decode_results(&res, batch, long)?);
    }
    s.gdb.command_ok(&format!("z0,{:x},1", plan.done))?;
    Ok(out)
}

fn check_stop(stop: &[u8]) -> Result<(), OracleError> {
    match stop.first() {
        Some(b'T') | Some(b'S') => Ok(()),
        _ => Err(OracleError::Guest(format!(
            "guest stopped with {:?} (triple fault?)",
            String::from_utf8_lossy(stop)
        ))),
    }
}

fn run_to(s: &mut Session, addr: u64, wait: Duration) -> Result<(), OracleError> {
    s.gdb.command_ok(&format!("Z0,{addr:x},1"))?;
    let stop = s.gdb.cont(wait)?;
    check_stop(&stop)?;
    s.gdb.command_ok(&format!("z0,{addr:x},1"))?;
    let rip = s.get_reg("rip")?;
    let cs_sel = s.get_reg("cs")?;
    // In 32-bit protected mode with a flat CS, linear = EIP.
    if rip != addr {
        return Err(OracleError::Guest(format!(
            "boot stub stopped at cs={cs_sel:#x} rip={rip:#x}, expected {addr:#x}"
        )));
    }
    Ok(())
}
