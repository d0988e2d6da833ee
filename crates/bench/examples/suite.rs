//! Runs the benchmark suite (quick, or `--full`) and prints the Markdown
//! tables: the same as `pgdcache bench`, without the CLI.

fn main() -> Result<(), pgdbench::BenchError> {
    let full = std::env::args().any(|a| a == "--full");
    let s = if full {
        pgdbench::Settings::full()
    } else {
        pgdbench::Settings::quick()
    };
    let mut last = "";
    let r = pgdbench::run(&s, |step| {
        if step.phase != last {
            last = step.phase;
            eprintln!("… {} ({}/{})", step.phase, step.done, step.total);
        }
    })?;
    print!("{}", pgdbench::markdown(&r));
    Ok(())
}
