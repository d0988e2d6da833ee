//! A kernel without `std` names its CPUs with its own function
//! (`smp_processor_id`); the page lists then follow it. Its own test binary:
//! the function is global and the first one installed wins.

use physmem::{Owner, SimMemory};

fn cpu_two() -> Option<usize> {
    Some(2)
}

#[test]
fn the_installed_cpu_function_picks_the_page_list() {
    let pm = SimMemory::new(64 << 20).unwrap();
    assert_eq!(physmem::this_cpu(), None);
    physmem::pcp::set_cpu_id_fn(cpu_two);
    assert_eq!(physmem::this_cpu(), Some(2));
    let free = pm.free_frames();
    let f = pm.alloc_frame(Owner::UserData).unwrap();
    let st = pm.pcp_stats();
    assert_eq!(st.refills, 1);
    assert_eq!(st.frames, u64::from(st.batch) - 1);
    pm.free_frame(f).unwrap();
    assert_eq!(pm.pcp_stats().frames, u64::from(st.batch));
    assert_eq!(pm.free_frames(), free);
    // A thread that entered a CPU overrides the function.
    let _cpu = physmem::enter_cpu(5);
    assert_eq!(physmem::this_cpu(), Some(5));
}
