//! Real-execution probes (placeholder).
use crate::qemu::QemuConfig;
use crate::{Access, OracleError, PagingImage, ProbeOutcome};

/// Run probes under QEMU.
pub fn run_qemu(
    _cfg: &QemuConfig,
    _img: &PagingImage,
    _accesses: &[Access],
) -> Result<Vec<ProbeOutcome>, OracleError> {
    Err(OracleError::Unsupported("not yet".into()))
}
