//! placeholder
use crate::mm::Booted;
use crate::cmdline::Params;

pub fn run(_b: &Booted, _p: &Params) -> ! {
    crate::report::event("{\"event\":\"done\"}");
    crate::arch::qemu_exit(crate::report::EXIT_DONE)
}
