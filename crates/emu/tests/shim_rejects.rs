//! The shim must reject what it cannot emulate at compile time rather than
//! compute something else: each snippet is compiled as a kernel would be.

use std::path::PathBuf;
use std::process::Command;

fn compile(body: &str) -> (bool, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shim = dir.join("shim");
    let tmp = std::env::temp_dir().join(format!("diffuse-emu-shim-{}-{:x}", std::process::id(), {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        h.finish()
    }));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = tmp.join("k.cu");
    std::fs::write(&src, body).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(cxx)
        .args(["-x", "c++", "-std=c++17", "-O1", "-fPIC", "-Wno-unknown-pragmas", "-include"])
        .arg(shim.join("shim.h"))
        .arg(format!("-I{}", shim.display()))
        .arg(format!("-I{}", shim.join("include").display()))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(tmp.join("k.o"))
        .output()
        .expect("a C++ compiler (the one build.rs used)");
    let _ = std::fs::remove_dir_all(&tmp);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn plain_cuda_compiles() {
    let (ok, err) = compile(
        r#"#include <cuda_runtime.h>
        #include <cuda_fp16.h>
        extern "C" __global__ void __launch_bounds__(256) k(float* __restrict__ y, const __half* x, int n) {
            __shared__ float s[256];
            extern __shared__ float dyn[];
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            float v = i < n ? __half2float(x[i]) : 0.0f;
        #pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        #pragma unroll 4
            for (int j = 0; j < 4; ++j) s[threadIdx.x] = v + j;
            __syncthreads();
            dyn[threadIdx.x] = s[threadIdx.x];
            if (i < n) atomicAdd(&y[0], min(dyn[threadIdx.x], 1.0f));
        }"#,
    );
    assert!(ok, "{err}");
}

#[test]
fn unsupported_constructs_fail_to_compile() {
    let cases = [
        ("__activemask", "unsigned m = __activemask(); y[0] = m;"),
        ("clock64", "y[0] = (float)clock64();"),
        ("clock", "y[0] = (float)clock();"),
        ("pre-Volta __shfl", "y[0] = __shfl(y[0], 0);"),
        ("round-toward-zero arithmetic", "y[0] = __fmul_rz(y[0], 2.0f);"),
        ("inline PTX", r#"unsigned l; asm volatile("mov.u32 %0, %%laneid;" : "=r"(l)); y[0] = l;"#),
        (
            "shuffle of a 16-byte type",
            "float4 v = make_float4(1, 2, 3, 4); v = __shfl_sync(0xffffffffu, v, 0); y[0] = v.x;",
        ),
    ];
    for (what, body) in cases {
        let (ok, _) = compile(&format!("extern \"C\" __global__ void k(float* y) {{ {body} }}"));
        assert!(!ok, "{what} must not compile under the shim");
    }
    let (ok, _) = compile("#include <cooperative_groups.h>\nextern \"C\" __global__ void k(float* y) {}");
    assert!(!ok, "cooperative groups are not provided");
}
