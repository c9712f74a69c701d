//! Typed handles of every kernel in `kernels/*.cu`: `kernels::conv2d::CONV2D_FWD_F32`
//! and so on, one module per `.cu` file, generated at build time by the one
//! kernel scanner (`crates/kernel-scan`, which the emulator's build uses
//! too). Launch code passes a handle, never a string, so a renamed kernel is
//! a compile error; [`Kernel::check_args`] checks every launch's arguments
//! against the scanned parameter kinds on every driver, CUDA included (the
//! emulator checks them again against the C++ signature itself).

use super::KernelArg;
use crate::{Result, TensorError};
use std::fmt;

/// The kind of a kernel parameter, from its CUDA C type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A pointer (a device address) to anything but bf16.
    Ptr,
    /// A pointer to `__nv_bfloat16`: only a bf16 tensor's buffer is accepted.
    PtrBf16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    /// A type the scanner does not classify; any argument is accepted here
    /// (the emulator still checks its size against the C++ signature).
    Other,
}

/// One parameter of a kernel.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: ArgKind,
}

/// One `extern "C" __global__` kernel: its name, the `.cu` file that defines
/// it and its parameters.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    /// The file under `kernels/`, such as `conv2d.cu`.
    pub file: &'static str,
    pub params: &'static [Param],
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (kernels/{})", self.name, self.file)
    }
}

impl Kernel {
    /// Errors unless `args` match the parameters in number and kind (a u64
    /// may stand for either 64-bit integer type, as in C).
    pub fn check_args(&self, args: &[KernelArg]) -> Result<()> {
        let bad = |msg: String| Err(TensorError::Launch { kernel: self.name.to_string(), msg });
        if args.len() != self.params.len() {
            return bad(format!("{} arguments passed, the kernel takes {}", args.len(), self.params.len()));
        }
        for (i, (arg, p)) in args.iter().zip(self.params).enumerate() {
            let ok = matches!(
                (arg, p.kind),
                (_, ArgKind::Other)
                    | (KernelArg::Ptr(_), ArgKind::Ptr)
                    | (KernelArg::PtrBf16(_), ArgKind::PtrBf16)
                    | (KernelArg::I32(_), ArgKind::I32)
                    | (KernelArg::U32(_), ArgKind::U32)
                    | (KernelArg::U64(_), ArgKind::U64 | ArgKind::I64)
                    | (KernelArg::F32(_), ArgKind::F32)
            );
            if let (KernelArg::PtrBf16(_), ArgKind::Ptr) = (arg, p.kind) {
                return bad(format!(
                    "argument {i} (`{}`) is a bf16 tensor where the kernel reads f32: bf16 storage feeds only \
                     the bf16 tensor-core products; convert it with to_dtype(DType::F32) first",
                    p.name
                ));
            }
            if !ok {
                return bad(format!("argument {i} (`{}`) is {:?}, the parameter is {:?}", p.name, arg, p.kind));
            }
        }
        Ok(())
    }
}

include!(concat!(env!("OUT_DIR"), "/kernel_handles.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_has_a_unique_name_and_a_known_parameter_kind() {
        let mut names: Vec<&str> = ALL.iter().map(|k| k.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a kernel name is defined twice");
        // the element type written: f32, u32 for the raw Philox words, bf16
        assert!(
            names.iter().all(|k| k.ends_with("_f32") || k.ends_with("_u32") || k.ends_with("_bf16")),
            "kernel names are <op>_<pass>_f32 (or _u32, _bf16)"
        );
        for k in ALL {
            assert!(k.params.iter().all(|p| p.kind != ArgKind::Other), "{k}: a parameter of unknown kind");
            assert!(super::super::sources::KERNEL_FILES.iter().any(|f| f.name == k.file), "{k}: file not embedded");
        }
        assert_eq!(conv2d::CONV2D_FWD_F32.file, "conv2d.cu");
    }

    #[test]
    fn arguments_are_checked_by_count_and_kind() {
        let k = &silu::SILU_FWD_F32;
        let good: Vec<KernelArg> = k
            .params
            .iter()
            .map(|p| if p.kind == ArgKind::Ptr { KernelArg::Ptr(8) } else { KernelArg::U64(1) })
            .collect();
        // a well-formed list for silu_fwd_f32(float* y, const float* x, unsigned long long n)
        assert!(k.check_args(&good).is_ok(), "{:?}", k.params);
        let err = k.check_args(&good[1..]).unwrap_err().to_string();
        assert!(err.contains("silu_fwd_f32") && err.contains("arguments passed"), "{err}");
        let mut wrong = good.clone();
        wrong[0] = KernelArg::F32(1.0);
        let err = k.check_args(&wrong).unwrap_err().to_string();
        assert!(err.contains("argument 0"), "{err}");
    }
}
