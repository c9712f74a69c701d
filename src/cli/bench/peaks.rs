//! Peak FP32 (non-tensor-core) and bf16 tensor-core throughput and DRAM
//! bandwidth of the GPUs a run is likely to meet, by the name the driver
//! reports (compute capability alone does not tell an H100 SXM from a PCIe
//! card). Figures are NVIDIA's datasheet numbers at boost clock, dense (the
//! datasheets' "with sparsity" bf16 figures halved; bf16 with fp32
//! accumulation, which the GeForce cards run at half their fp16 rate):
//!
//! | GPU | CC | FP32 TFLOP/s | bf16 TC TFLOP/s | DRAM TB/s | source |
//! | --- | --- | ---: | ---: | ---: | --- |
//! | H200 SXM / NVL | 9.0 | 67 / 60 | 989 / 835 | 4.8 / 4.8 | nvidia.com/en-us/data-center/h200 (datasheet table) |
//! | H100 SXM | 9.0 | 67 | 989 | 3.35 | nvidia.com/en-us/data-center/h100 (datasheet table) |
//! | H100 NVL | 9.0 | 60 | 835 | 3.9 | same |
//! | H100 PCIe | 9.0 | 51 | 756 | 2.0 | same |
//! | A100 SXM 80GB / 40GB | 8.0 | 19.5 | 312 | 2.039 / 1.555 | nvidia.com/en-us/data-center/a100 (datasheet table) |
//! | A100 PCIe 80GB / 40GB | 8.0 | 19.5 | 312 | 1.935 / 1.555 | same |
//! | L40S | 8.9 | 91.6 | 362 | 0.864 | nvidia.com/en-us/data-center/l40s (datasheet) |
//! | L4 | 8.9 | 30.3 | 121 | 0.300 | nvidia.com/en-us/data-center/l4 (datasheet) |
//! | A10 | 8.6 | 31.2 | 125 | 0.600 | nvidia.com/en-us/data-center/products/a10-gpu (datasheet) |
//! | T4 | 7.5 | 8.1 | - (no bf16) | 0.320 | nvidia.com/en-us/data-center/tesla-t4 (datasheet) |
//! | V100 SXM2 | 7.0 | 15.7 | - (no bf16) | 0.900 | nvidia.com/en-us/data-center/v100 (datasheet) |
//! | RTX 4090 | 8.9 | 82.6 | 165 | 1.008 | NVIDIA Ada GPU architecture whitepaper, appendix table |
//! | RTX 3090 | 8.6 | 35.6 | 71 | 0.936 | NVIDIA Ampere GA102 GPU architecture whitepaper, table |
//!
//! A name that matches none gives no peak (the JSON says `null`).

/// Peaks of one GPU model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    pub gpu: &'static str,
    /// Compute capability (major, minor).
    pub cc: (u32, u32),
    pub fp32_tflops: f64,
    /// Dense bf16 tensor-core throughput with fp32 accumulation (None: no
    /// bf16 tensor cores).
    pub bf16_tflops: Option<f64>,
    pub dram_tbps: f64,
}

/// Name fragments, most specific first (the first whose every fragment is
/// in the device name, compared without case, wins).
const TABLE: &[(&[&str], Peak)] = &[
    (
        &["h200", "nvl"],
        Peak { gpu: "H200 NVL", cc: (9, 0), fp32_tflops: 60.0, bf16_tflops: Some(835.0), dram_tbps: 4.8 },
    ),
    (&["h200"], Peak { gpu: "H200 SXM", cc: (9, 0), fp32_tflops: 67.0, bf16_tflops: Some(989.0), dram_tbps: 4.8 }),
    (
        &["h100", "nvl"],
        Peak { gpu: "H100 NVL", cc: (9, 0), fp32_tflops: 60.0, bf16_tflops: Some(835.0), dram_tbps: 3.9 },
    ),
    (
        &["h100", "pcie"],
        Peak { gpu: "H100 PCIe", cc: (9, 0), fp32_tflops: 51.0, bf16_tflops: Some(756.0), dram_tbps: 2.0 },
    ),
    (&["h100"], Peak { gpu: "H100 SXM", cc: (9, 0), fp32_tflops: 67.0, bf16_tflops: Some(989.0), dram_tbps: 3.35 }),
    (
        &["a100", "pcie", "80"],
        Peak { gpu: "A100 PCIe 80GB", cc: (8, 0), fp32_tflops: 19.5, bf16_tflops: Some(312.0), dram_tbps: 1.935 },
    ),
    (
        &["a100", "80"],
        Peak { gpu: "A100 SXM 80GB", cc: (8, 0), fp32_tflops: 19.5, bf16_tflops: Some(312.0), dram_tbps: 2.039 },
    ),
    (&["a100"], Peak { gpu: "A100 40GB", cc: (8, 0), fp32_tflops: 19.5, bf16_tflops: Some(312.0), dram_tbps: 1.555 }),
    (&["l40s"], Peak { gpu: "L40S", cc: (8, 9), fp32_tflops: 91.6, bf16_tflops: Some(362.0), dram_tbps: 0.864 }),
    (&["l4"], Peak { gpu: "L4", cc: (8, 9), fp32_tflops: 30.3, bf16_tflops: Some(121.0), dram_tbps: 0.300 }),
    (&["a10"], Peak { gpu: "A10", cc: (8, 6), fp32_tflops: 31.2, bf16_tflops: Some(125.0), dram_tbps: 0.600 }),
    (&["t4"], Peak { gpu: "T4", cc: (7, 5), fp32_tflops: 8.1, bf16_tflops: None, dram_tbps: 0.320 }),
    (&["v100"], Peak { gpu: "V100 SXM2", cc: (7, 0), fp32_tflops: 15.7, bf16_tflops: None, dram_tbps: 0.900 }),
    (&["4090"], Peak { gpu: "RTX 4090", cc: (8, 9), fp32_tflops: 82.6, bf16_tflops: Some(165.0), dram_tbps: 1.008 }),
    (&["3090"], Peak { gpu: "RTX 3090", cc: (8, 6), fp32_tflops: 35.6, bf16_tflops: Some(71.0), dram_tbps: 0.936 }),
];

/// The peak of the GPU a driver names (`"cuda:0 (NVIDIA H100 80GB HBM3)"`).
pub fn for_device_name(name: &str) -> Option<Peak> {
    let name = name.to_lowercase();
    TABLE.iter().find(|(frags, _)| frags.iter().all(|f| name.contains(f))).map(|&(_, p)| p)
}

/// The H100 SXM, the card KERNELS.md's floors are for.
pub fn h100() -> Peak {
    TABLE.iter().find(|(_, p)| p.gpu == "H100 SXM").map(|&(_, p)| p).unwrap_or(Peak {
        gpu: "H100 SXM",
        cc: (9, 0),
        fp32_tflops: 67.0,
        bf16_tflops: Some(989.0),
        dram_tbps: 3.35,
    })
}

impl Peak {
    /// The roofline floor of `flops` and `bytes`, in microseconds.
    pub fn floor_us(&self, flops: f64, bytes: f64) -> f64 {
        (flops / (self.fp32_tflops * 1e6)).max(bytes / (self.dram_tbps * 1e6))
    }

    /// The floor when the arithmetic runs on the bf16 tensor cores (the
    /// FP32 floor on a GPU without them); the bytes are the same, as
    /// activations stay f32 in memory.
    pub fn bf16_floor_us(&self, flops: f64, bytes: f64) -> f64 {
        let tflops = self.bf16_tflops.unwrap_or(self.fp32_tflops);
        (flops / (tflops * 1e6)).max(bytes / (self.dram_tbps * 1e6))
    }

    /// Whether `flops` over `bytes` is limited by arithmetic (else by memory).
    pub fn compute_bound(&self, flops: f64, bytes: f64) -> bool {
        flops / (self.fp32_tflops * 1e6) >= bytes / (self.dram_tbps * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pick_the_right_card() {
        let gpu = |n: &str| for_device_name(n).map(|p| p.gpu);
        assert_eq!(gpu("cuda:0 (NVIDIA H100 80GB HBM3)"), Some("H100 SXM"));
        assert_eq!(gpu("cuda:0 (NVIDIA H100 PCIe)"), Some("H100 PCIe"));
        assert_eq!(gpu("cuda:0 (NVIDIA H200)"), Some("H200 SXM"));
        assert_eq!(gpu("cuda:1 (NVIDIA A100-SXM4-80GB)"), Some("A100 SXM 80GB"));
        assert_eq!(gpu("cuda:0 (NVIDIA L40S)"), Some("L40S"));
        assert_eq!(gpu("cuda:0 (NVIDIA L4)"), Some("L4"));
        assert_eq!(gpu("cuda:0 (NVIDIA GeForce RTX 4090)"), Some("RTX 4090"));
        assert_eq!(gpu("emu"), None);
    }

    #[test]
    fn floor_is_the_larger_of_compute_and_memory() {
        let p = h100();
        // 924.8 MFLOP and 12.88 MB: compute-bound, 924.8e6 / 67e12 s
        assert!((p.floor_us(924.8e6, 12.88e6) - 13.80).abs() < 0.01);
        assert!(p.compute_bound(924.8e6, 12.88e6));
        // 19.27 MB at 3.35 TB/s
        assert!((p.floor_us(1.6e6, 19.27e6) - 5.75).abs() < 0.01);
        // On the bf16 tensor cores the same pass is memory-bound: 12.88 MB
        // at 3.35 TB/s (the arithmetic alone, 924.8e6 / 989e12 s, is 0.94 us).
        assert!((p.bf16_floor_us(924.8e6, 12.88e6) - 3.845).abs() < 0.001);
        let t4 = for_device_name("Tesla T4").unwrap();
        assert_eq!(t4.bf16_floor_us(924.8e6, 1.0), t4.floor_us(924.8e6, 1.0));
    }
}
