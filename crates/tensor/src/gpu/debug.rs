//! Finding which kernel failed. On a GPU, launches are asynchronous: a fault
//! surfaces at some later call (a copy, a free) that names no kernel. Two
//! things help:
//!
//! - `DIFFUSE_CUDA_SYNC=1` (or [`GpuDevice::with_sync_launches`]): every
//!   launch is followed by a synchronise, and an error of either names the
//!   kernel, its grid, block, shared memory and arguments
//!   ([`describe_launch`]). Slow; for debugging.
//! - Driver results of calls that cannot return one (`cuMemFree` from Drop)
//!   are kept in [`DeferredErrors`] and returned by the driver's next
//!   fallible call, never dropped.
//!
//! [`GpuDevice::with_sync_launches`]: super::GpuDevice::with_sync_launches

use super::{KernelArg, Launch};
use crate::{Result, TensorError};
use std::sync::Mutex;

/// The environment variable that turns synchronous launches on.
pub const SYNC_ENV: &str = "DIFFUSE_CUDA_SYNC";

/// Whether `value` (of `DIFFUSE_CUDA_SYNC`) asks for synchronous launches:
/// `1`, `true`, `on` or `yes`.
pub fn sync_launches_requested(value: Option<&str>) -> bool {
    matches!(value.map(|v| v.trim().to_ascii_lowercase()).as_deref(), Some("1" | "true" | "on" | "yes"))
}

pub fn sync_launches_from_env() -> bool {
    sync_launches_requested(std::env::var(SYNC_ENV).ok().as_deref())
}

fn arg_value(a: &KernelArg) -> String {
    match a {
        KernelArg::Ptr(p) => format!("{p:#x}"),
        KernelArg::PtrBf16(p) => format!("{p:#x} (bf16)"),
        KernelArg::I32(v) => v.to_string(),
        KernelArg::U32(v) => v.to_string(),
        KernelArg::U64(v) => v.to_string(),
        KernelArg::F32(v) => format!("{v:?}"),
    }
}

/// One line naming a launch: `kernel (kernels/file.cu) grid (x, y, z) block
/// (x, y, z), S shared bytes, args (name=value, ...)`.
pub fn describe_launch(l: &Launch<'_>) -> String {
    let args: Vec<String> = l
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let name = l.kernel.params.get(i).map_or("?", |p| p.name);
            format!("{name}={}", arg_value(a))
        })
        .collect();
    let (g, b) = (l.grid, l.block);
    format!(
        "{} grid ({}, {}, {}) block ({}, {}, {}), {} shared bytes, args ({})",
        l.kernel,
        g.x,
        g.y,
        g.z,
        b.x,
        b.y,
        b.z,
        l.shared_bytes,
        args.join(", ")
    )
}

/// `e` as a launch error of `l` that names the whole launch.
pub fn name_launch(e: TensorError, l: &Launch<'_>) -> TensorError {
    let msg = match e {
        TensorError::Launch { msg, .. } => msg,
        other => other.to_string(),
    };
    TensorError::Launch {
        kernel: l.kernel.name.to_string(),
        msg: format!("{msg} [synchronous launch: {}]", describe_launch(l)),
    }
}

/// Driver errors that could not be returned when they happened (a free from
/// Drop); the next fallible call of the driver returns them.
#[derive(Debug, Default)]
pub struct DeferredErrors {
    pending: Mutex<Vec<String>>,
}

impl DeferredErrors {
    /// Keeps `what` failed for the next [`take`](Self::take) and logs it
    /// (a process that makes no further call still shows it).
    pub fn record(&self, what: String) {
        eprintln!("diffuse: GPU driver error kept for the next call: {what}");
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    }

    /// Ok when nothing failed since the last call; else every kept error,
    /// once.
    pub fn take(&self) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut *pending);
        Err(TensorError::Cuda(format!("an earlier driver call failed: {}", all.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{kernels, Dim3};

    fn attention_launch(args: &[KernelArg]) -> Launch<'_> {
        Launch {
            kernel: &kernels::attention::ATTENTION_FWD_F32,
            grid: Dim3::new(16, 2, 1),
            block: Dim3::x(256),
            shared_bytes: 67904,
            args,
        }
    }

    #[test]
    fn a_launch_is_described_with_its_shape_and_named_arguments() {
        let p = |v| KernelArg::Ptr(v);
        let args = [
            p(0x1000),
            p(0x2000),
            p(0x3000),
            p(0x4000),
            p(0x5000),
            KernelArg::I32(256),
            KernelArg::I32(256),
            KernelArg::F32(0.0625),
            KernelArg::I32(16),
        ];
        let d = describe_launch(&attention_launch(&args));
        assert_eq!(
            d,
            "attention_fwd_f32 (kernels/attention.cu) grid (16, 2, 1) block (256, 1, 1), 67904 shared bytes, \
             args (out=0x1000, lse=0x2000, q=0x3000, k=0x4000, v=0x5000, c=256, n=256, scale=0.0625, bq=16)"
        );
    }

    #[test]
    fn a_named_launch_error_keeps_the_driver_message() {
        let args = [KernelArg::I32(1)];
        let l = attention_launch(&args);
        let e = name_launch(TensorError::Cuda("synchronize: CUDA_ERROR_ILLEGAL_ADDRESS".into()), &l);
        let s = e.to_string();
        assert!(
            s.starts_with("kernel launch attention_fwd_f32: CUDA driver: synchronize: CUDA_ERROR_ILLEGAL_ADDRESS"),
            "{s}"
        );
        assert!(s.contains("[synchronous launch: attention_fwd_f32 (kernels/attention.cu) grid (16, 2, 1)"), "{s}");
        let e = name_launch(TensorError::Launch { kernel: "x".into(), msg: "fault".into() }, &l);
        assert!(e.to_string().starts_with("kernel launch attention_fwd_f32: fault [synchronous"), "{e}");
    }

    #[test]
    fn sync_mode_values() {
        for on in ["1", "true", "ON", " yes "] {
            assert!(sync_launches_requested(Some(on)), "{on}");
        }
        for off in ["", "0", "false", "off", "2"] {
            assert!(!sync_launches_requested(Some(off)), "{off}");
        }
        assert!(!sync_launches_requested(None));
    }

    #[test]
    fn deferred_errors_surface_once_at_the_next_call() {
        let d = DeferredErrors::default();
        assert!(d.take().is_ok());
        d.record("cuMemFree(0x1000): CUDA_ERROR_ILLEGAL_ADDRESS".into());
        d.record("cuMemFree(0x2000): CUDA_ERROR_ILLEGAL_ADDRESS".into());
        let e = d.take().unwrap_err().to_string();
        assert!(e.contains("an earlier driver call failed: cuMemFree(0x1000)"), "{e}");
        assert!(e.contains("; cuMemFree(0x2000)"), "{e}");
        assert!(d.take().is_ok(), "reported once");
    }

    /// The emulator driver in synchronous mode: a launch that overruns its
    /// buffer fails naming the kernel, its shape and every argument.
    #[test]
    fn sync_mode_on_the_emulator_names_the_failing_launch() {
        use crate::gpu::emu::EmuDriver;
        use crate::gpu::GpuDevice;
        let dev = GpuDevice::new(std::sync::Arc::new(EmuDriver::new().unwrap())).unwrap().with_sync_launches(true);
        assert!(dev.sync_launches());
        let x = dev.upload_f32(&[0.5; 8]).unwrap();
        let y = dev.alloc_f32(8).unwrap();
        // n past the 8 elements of both buffers
        let args = [y.arg(), x.arg(), KernelArg::U64(5000)];
        let l = Launch {
            kernel: &kernels::silu::SILU_FWD_F32,
            grid: Dim3::x(20),
            block: Dim3::x(256),
            shared_bytes: 0,
            args: &args,
        };
        let e = dev.launch(&l).unwrap_err().to_string();
        let want = format!(
            "[synchronous launch: silu_fwd_f32 (kernels/silu.cu) grid (20, 1, 1) block (256, 1, 1), 0 shared bytes, \
             args (y={:#x}, x={:#x}, n=5000)]",
            y.ptr(),
            x.ptr()
        );
        assert!(e.starts_with("kernel launch silu_fwd_f32: "), "{e}");
        assert!(e.contains(&want), "{e}");
        // a correct launch still works in this mode
        let args = [y.arg(), x.arg(), KernelArg::U64(8)];
        dev.launch(&Launch { args: &args, ..l }).unwrap();
        assert_eq!(y.download_f32().unwrap()[3], 0.5 / (1.0 + (-0.5f32).exp()));
    }

    /// A failed free (here of a pointer the driver never gave out) is the
    /// error of the next fallible call, once.
    #[test]
    fn a_failed_free_surfaces_at_the_next_call() {
        use crate::gpu::emu::EmuDriver;
        use crate::gpu::GpuDriver;
        let d = EmuDriver::new().unwrap();
        d.free(0xdead_0000);
        let e = d.alloc(4).unwrap_err().to_string();
        assert!(e.contains("an earlier driver call failed: emulator free(0xdead0000)"), "{e}");
        let p = d.alloc(4).unwrap();
        d.free(p);
        d.synchronize().unwrap();
    }
}
