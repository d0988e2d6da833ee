//! Prints the default comparison (`cargo run --release --example compare -- [workload]`).
fn main() {
    let mut spec = sim::CompareSpec::default();
    if let Some(w) = std::env::args().nth(1) {
        match w.parse() {
            Ok(w) => spec.workload = w,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    let t = std::time::Instant::now();
    match sim::compare(&spec, |r| {
        eprintln!("{} {} {}", r.mode, r.scheme, r.verdict.short())
    }) {
        Ok(rows) => {
            println!("{}", sim::compare::configuration(&spec));
            print!("{}", sim::compare::table(&rows));
            for r in &rows {
                if let Some(rep) = &r.report {
                    for l in rep
                        .first_live
                        .iter()
                        .take(2)
                        .chain(rep.final_check.first.iter().take(2))
                    {
                        println!("  {} {}: {l}", r.mode, r.scheme);
                    }
                }
            }
            println!("took {:.2}s", t.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
