//! The access table the probe program reads (32 bytes per access) and the
//! result records it writes, shared by the QEMU and KVM drivers.

use crate::{Access, AccessKind, OracleError, ProbeOutcome};

/// Bytes of one batch's access table (32 bytes per access).
pub fn encode_batch(batch: &[Access]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len() * 32);
    for a in batch {
        out.extend_from_slice(&a.va.to_le_bytes());
        let kind: u32 = match a.kind {
            AccessKind::Read => 0,
            AccessKind::Write => 1,
            AccessKind::Exec => 2,
        };
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&u32::from(a.user).to_le_bytes());
        out.extend_from_slice(&a.value.to_le_bytes());
        out.extend_from_slice(&[0u8; 8]);
    }
    out
}

/// Decode one batch's results.
pub fn decode_results(
    bytes: &[u8],
    batch: &[Access],
    long: bool,
) -> Result<Vec<ProbeOutcome>, OracleError> {
    let mask = if long { u64::MAX } else { u64::from(u32::MAX) };
    let mut out = Vec::with_capacity(batch.len());
    for (i, (rec, a)) in bytes.chunks_exact(32).zip(batch).enumerate() {
        let q = |k: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[k * 8..k * 8 + 8]);
            u64::from_le_bytes(b) & mask
        };
        out.push(match q(0) {
            1 => ProbeOutcome::Ok(q(1)),
            2 => ProbeOutcome::PageFault {
                cr2: q(2),
                error_code: q(3),
            },
            3 => ProbeOutcome::Exception { vector: q(1) as u8 },
            s => {
                return Err(OracleError::Guest(format!(
                    "access {i} ({:?} {:#x}) has status {s:#x}: the program lost control",
                    a.kind, a.va
                )))
            }
        });
    }
    Ok(out)
}
