//! KERNELS.md's occupancy table is what `gpu::occupancy` computes from the
//! table's own register and shared-memory columns (the ptxas figures that
//! `scripts/occupancy.sh` fills in) and the launch code's block size and
//! dynamic shared memory, and it has a row for every kernel.

use diffuse_tensor::gpu::kernels;
use diffuse_tensor::gpu::occupancy::{markdown_table, KernelResources};

fn kernels_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../KERNELS.md");
    std::fs::read_to_string(path).expect("reading KERNELS.md")
}

/// The occupancy table's lines, header included.
fn occupancy_table(md: &str) -> Vec<&str> {
    let start = md.lines().position(|l| l.starts_with("| kernel | regs sm_80 / sm_90 |")).expect("no occupancy table");
    md.lines().skip(start).take_while(|l| l.starts_with('|')).collect()
}

fn resources(row: &str) -> KernelResources {
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    let (r80, r90) = cells[1].split_once(" / ").unwrap_or_else(|| panic!("registers cell of {row}"));
    let num = |s: &str| s.trim().parse::<u32>().unwrap_or_else(|_| panic!("`{s}` in {row}"));
    KernelResources { name: cells[0].to_string(), regs_sm80: num(r80), regs_sm90: num(r90), static_smem: num(cells[2]) }
}

#[test]
fn kernels_md_occupancy_matches_the_calculator() {
    let md = kernels_md();
    let table = occupancy_table(&md);
    let rows: Vec<KernelResources> = table[2..].iter().map(|r| resources(r)).collect();
    let want = markdown_table(&rows);
    let got = table.join("\n") + "\n";
    assert!(got == want, "KERNELS.md's occupancy table is stale; run scripts/occupancy.sh. Expected:\n{want}");
    for k in kernels::ALL {
        assert!(rows.iter().any(|r| r.name == k.name), "{} has no occupancy row: run scripts/occupancy.sh", k.name);
    }
}
