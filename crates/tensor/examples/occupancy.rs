//! Prints the occupancy table of KERNELS.md from two `check-kernels.sh`
//! reports (sm_80 and sm_90); `scripts/occupancy.sh` runs both and this.
//!
//! cargo run -p diffuse-tensor --example occupancy -- SM80_REPORT SM90_REPORT

use diffuse_tensor::gpu::occupancy::{join_tables, markdown_table, parse_ptxas_table};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sm80, sm90] = args.as_slice() else {
        eprintln!("usage: occupancy SM80_REPORT SM90_REPORT");
        return ExitCode::from(2);
    };
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("error: reading {p}: {e}"));
    let (t80, t90) = match (read(sm80), read(sm90)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = join_tables(&parse_ptxas_table(&t80), &parse_ptxas_table(&t90));
    if rows.is_empty() {
        eprintln!("error: no kernel appears in both reports");
        return ExitCode::FAILURE;
    }
    print!("{}", markdown_table(&rows));
    ExitCode::SUCCESS
}
