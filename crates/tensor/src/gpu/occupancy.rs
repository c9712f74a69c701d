//! Theoretical occupancy: how many blocks of a kernel fit on one SM of an
//! A100 and an H100, from its registers and shared memory (ptxas's report,
//! `scripts/check-kernels.sh`) and the launch code's block size and dynamic
//! shared memory, with the published per-SM limits (CUDA C Programming
//! Guide, "Compute capabilities" table; the same rules as the CUDA occupancy
//! calculator). `scripts/occupancy.sh` prints the table of KERNELS.md and
//! `tests/occupancy.rs` checks that table against this code.

use super::launch::{attention, attention_tc, conv2d_tc, BLOCK};
use crate::Precision;

/// The per-SM limits of one architecture.
#[derive(Clone, Copy, Debug)]
pub struct SmLimits {
    pub name: &'static str,
    pub arch: &'static str,
    pub regs_per_sm: u32,
    /// Registers are given to warps in units of this many.
    pub reg_alloc_unit: u32,
    pub max_warps: u32,
    pub max_blocks: u32,
    /// Shared memory an SM can give blocks (the largest carveout).
    pub smem_per_sm: u32,
    /// The opt-in maximum of one block (`MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`).
    pub smem_per_block: u32,
    /// Shared memory the system reserves for each resident block.
    pub smem_reserved_per_block: u32,
}

/// A100 (sm_80): 64K registers, 64 warps, 32 blocks, 164 KiB shared a SM.
pub const A100: SmLimits = SmLimits {
    name: "A100",
    arch: "sm_80",
    regs_per_sm: 65536,
    reg_alloc_unit: 256,
    max_warps: 64,
    max_blocks: 32,
    smem_per_sm: 164 * 1024,
    smem_per_block: 163 * 1024,
    smem_reserved_per_block: 1024,
};

/// H100 (sm_90): 64K registers, 64 warps, 32 blocks, 228 KiB shared a SM.
pub const H100: SmLimits = SmLimits {
    name: "H100",
    arch: "sm_90",
    regs_per_sm: 65536,
    reg_alloc_unit: 256,
    max_warps: 64,
    max_blocks: 32,
    smem_per_sm: 228 * 1024,
    smem_per_block: 227 * 1024,
    smem_reserved_per_block: 1024,
};

/// Resident blocks of one kernel on one SM and what limits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occupancy {
    pub blocks: u32,
    /// Resident warps / the SM's maximum, in percent.
    pub percent: u32,
    /// "registers", "shared memory", "threads" or "blocks".
    pub limiter: &'static str,
}

/// Blocks of `threads` threads using `regs` registers a thread and `smem`
/// bytes of shared memory (static + dynamic) that fit on one SM.
pub fn blocks_per_sm(sm: &SmLimits, threads: u32, regs: u32, smem: u32) -> Occupancy {
    let warps = threads.div_ceil(32).max(1);
    let regs_per_warp = (regs.max(1) * 32).div_ceil(sm.reg_alloc_unit) * sm.reg_alloc_unit;
    let by_regs = (sm.regs_per_sm / regs_per_warp) / warps;
    let by_smem = if smem > sm.smem_per_block { 0 } else { sm.smem_per_sm / (smem + sm.smem_reserved_per_block) };
    let by_threads = sm.max_warps / warps;
    // on a tie the architectural limit is named, not a kernel's resource
    let limits =
        [(by_threads, "threads"), (sm.max_blocks, "blocks"), (by_regs, "registers"), (by_smem, "shared memory")];
    let (blocks, limiter) = limits.into_iter().min_by_key(|&(b, _)| b).unwrap_or((0, "blocks"));
    Occupancy { blocks, percent: blocks * warps * 100 / sm.max_warps, limiter }
}

/// The attention channels of each preset (crates/unet/src/config.rs: the
/// MNIST model attends at 7x7 with ch 32 x 2; CIFAR-10 at 16x16 and in the
/// middle with ch 128 x 2; a unet test keeps these in step).
pub const PRESET_ATTENTION_CHANNELS: [(&str, usize); 2] = [("mnist", 64), ("cifar10", 256)];

/// Threads per block of `kernel`: 128 for the tensor-core kernels
/// (`*_tc_*`, four warps on a 64 x 64 tile), 256 for every other.
pub fn block_threads(kernel: &str) -> u32 {
    if kernel.contains("_tc_") {
        conv2d_tc::THREADS
    } else {
        BLOCK
    }
}

/// The dynamic shared memory `kernel` is launched with on `sm` for
/// attention with `c` channels (only the attention kernels have any).
pub fn dynamic_smem(kernel: &str, c: usize, sm: &SmLimits) -> u32 {
    let budget = attention::smem_budget(sm.smem_per_block);
    if kernel.starts_with("attention_") && kernel.contains("_tc_") {
        return attention_tc_smem(kernel, c, budget);
    }
    let (Some(bq), Some(t)) = (attention::forward_tile(c, budget), attention::backward_tile(c, budget)) else {
        return 0;
    };
    let (fwd, dkdv, dq) = attention::shared_bytes(c, bq, t);
    match kernel {
        "attention_fwd_f32" => fwd as u32,
        "attention_bwd_dkdv_f32" => dkdv as u32,
        "attention_bwd_dq_f32" => dq as u32,
        _ => 0,
    }
}

/// The tensor-core attention's dynamic shared memory (its tiles depend on
/// the precision in the kernel's name).
fn attention_tc_smem(kernel: &str, c: usize, budget: usize) -> u32 {
    let p = if kernel.contains("_tc_bf16") { Precision::Bf16 } else { Precision::Tf32 };
    let bytes = if kernel.starts_with("attention_fwd_") {
        attention_tc::forward_tile(p, c, budget).map(|t| attention_tc::fwd_smem(p, c, t))
    } else {
        let t = attention_tc::backward_tile(p, c, budget);
        if kernel.starts_with("attention_bwd_dkdv_") {
            t.map(|t| attention_tc::dkdv_smem(p, c, t))
        } else {
            t.map(|t| attention_tc::dq_smem(p, c, t))
        }
    };
    bytes.unwrap_or(0) as u32
}

/// One kernel line of a `check-kernels.sh` table: (name, registers, static
/// shared bytes).
pub fn parse_ptxas_line(line: &str) -> Option<(String, u32, u32)> {
    let mut w = line.split_whitespace();
    let name = w.next()?;
    let regs = w.next()?.parse().ok()?;
    let smem = w.next()?.parse().ok()?;
    Some((name.to_string(), regs, smem))
}

/// Every kernel line of a `check-kernels.sh` table.
pub fn parse_ptxas_table(text: &str) -> Vec<(String, u32, u32)> {
    text.lines().filter_map(parse_ptxas_line).collect()
}

/// One row of the occupancy table: a kernel with its sm_80 and sm_90
/// registers and static shared memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub regs_sm80: u32,
    pub regs_sm90: u32,
    pub static_smem: u32,
}

/// Joins the sm_80 and sm_90 ptxas tables by kernel name (sm_90's order).
pub fn join_tables(sm80: &[(String, u32, u32)], sm90: &[(String, u32, u32)]) -> Vec<KernelResources> {
    sm90.iter()
        .filter_map(|(name, r90, s90)| {
            let (_, r80, _) = sm80.iter().find(|(n, _, _)| n == name)?;
            Some(KernelResources { name: name.clone(), regs_sm80: *r80, regs_sm90: *r90, static_smem: *s90 })
        })
        .collect()
}

fn cell(o: Occupancy) -> String {
    format!("{} ({}%, {})", o.blocks, o.percent, o.limiter)
}

/// The markdown occupancy table of KERNELS.md: per kernel, its resources and
/// the blocks per SM (occupancy, limiter) on A100 and H100 at each preset.
pub fn markdown_table(rows: &[KernelResources]) -> String {
    let mut out = String::from(
        "| kernel | regs sm_80 / sm_90 | static smem B | dynamic smem B mnist / cifar10 (A100; H100) \
         | A100 mnist | A100 cifar10 | H100 mnist | H100 cifar10 |\n\
         | --- | ---: | ---: | ---: | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let mut cells = Vec::new();
        let mut dyn_cells = Vec::new();
        for (sm, regs) in [(&A100, r.regs_sm80), (&H100, r.regs_sm90)] {
            let dy: Vec<u32> = PRESET_ATTENTION_CHANNELS.iter().map(|&(_, c)| dynamic_smem(&r.name, c, sm)).collect();
            dyn_cells.push(dy.iter().map(u32::to_string).collect::<Vec<_>>().join(" / "));
            for d in dy {
                cells.push(cell(blocks_per_sm(sm, block_threads(&r.name), regs, r.static_smem + d)));
            }
        }
        let dynamic = if dyn_cells[0] == dyn_cells[1] { dyn_cells[0].clone() } else { dyn_cells.join("; ") };
        out.push_str(&format!(
            "| {} | {} / {} | {} | {} | {} |\n",
            r.name,
            r.regs_sm80,
            r.regs_sm90,
            r.static_smem,
            dynamic,
            cells.join(" | ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures of the CUDA occupancy calculator (compute capability 8.0 and
    /// 9.0, 256 threads a block).
    #[test]
    fn blocks_per_sm_follow_the_occupancy_calculator() {
        let b = |sm, regs, smem| blocks_per_sm(sm, 256, regs, smem);
        // 32 registers: 8 blocks, all 64 warps (threads limit)
        assert_eq!(b(&A100, 32, 0), Occupancy { blocks: 8, percent: 100, limiter: "threads" });
        // 48 registers: 1536 a warp -> 42 warps -> 5 blocks
        assert_eq!(b(&H100, 48, 0), Occupancy { blocks: 5, percent: 62, limiter: "registers" });
        // 64 registers: 2048 a warp -> 32 warps -> 4 blocks
        assert_eq!(b(&A100, 64, 8320), Occupancy { blocks: 4, percent: 50, limiter: "registers" });
        // 41 registers round up to 48 per thread (256 per warp units)
        assert_eq!(b(&A100, 41, 0), b(&A100, 48, 0));
        // 102,912 + 1 KiB reserved: 1 block in 164 KiB, 2 in 228 KiB
        assert_eq!(b(&A100, 32, 102_912), Occupancy { blocks: 1, percent: 12, limiter: "shared memory" });
        assert_eq!(b(&H100, 32, 102_912).blocks, 2);
        // more than a block may have: none
        assert_eq!(b(&A100, 32, 170_000).blocks, 0);
        // tiny blocks: the 32-block limit
        assert_eq!(blocks_per_sm(&H100, 32, 16, 0), Occupancy { blocks: 32, percent: 50, limiter: "blocks" });
    }

    #[test]
    fn attention_smem_follows_the_launch_code() {
        // C = 256 on an A100: forward tile 32 (102,912 B), backward 16
        assert_eq!(dynamic_smem("attention_fwd_f32", 256, &A100), 102_912);
        assert_eq!(dynamic_smem("attention_bwd_dkdv_f32", 256, &A100), 100_608);
        assert_eq!(dynamic_smem("conv2d_fwd_f32", 256, &A100), 0);
    }

    #[test]
    fn ptxas_tables_parse_and_join() {
        let t90 = "kernel regs smem_B stack_B spill_st_B spill_ld_B\nsilu_fwd_f32 20 0 0 0 0\nconv2d_fwd_f32 48 8320 0 0 0\ncheck-kernels: 2 files";
        let t80 = "silu_fwd_f32 18 0 0 0 0\nconv2d_fwd_f32 56 8320 0 0 0";
        let rows = join_tables(&parse_ptxas_table(t80), &parse_ptxas_table(t90));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            KernelResources { name: "conv2d_fwd_f32".into(), regs_sm80: 56, regs_sm90: 48, static_smem: 8320 }
        );
        let md = markdown_table(&rows);
        assert!(md.contains("| conv2d_fwd_f32 | 56 / 48 | 8320 | 0 / 0 | 4 (50%, registers) |"), "{md}");
    }
}
