//! `diffuse selftest` and `diffuse bench kernels` from the command line:
//! the quick self-test passes on the emulator and the CPU, a missing GPU is
//! one clear error, the kernel benchmark's JSON lines carry the counts the
//! emulator gives, and `bench step` reports bf16 activation storage.

mod cli_common;

use cli_common::{diffuse, fails, ok};

#[test]
fn quick_selftest_passes_on_the_emulator() {
    let o = diffuse(&["selftest", "--device", "emu", "--quick"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "selftest failed:\n{out}\n{err}");
    for op in [
        "conv2d_backward_weight",
        "attention_backward dq",
        "conv2d_forward, bf16 x",
        "adamw_step m",
        "unet backward",
        "sampler",
    ] {
        assert!(out.contains(op), "no row for {op}:\n{out}");
    }
    assert!(out.lines().skip(1).all(|l| l.ends_with("pass") || l.contains("pass")), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(err.contains("ops passed"), "{err}");
}

#[test]
fn quick_selftest_on_the_cpu_is_bit_exact() {
    let out = ok(&["selftest", "--device", "cpu", "--quick", "--json"]);
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(rows.len() > 50, "{} rows", rows.len());
    for r in &rows {
        assert_eq!(r["pass"], true, "{r}");
        assert_eq!(r["max_rel_err"].as_f64(), Some(0.0), "{r}");
    }
}

#[test]
fn a_missing_gpu_is_one_clear_error() {
    let err = fails(&["selftest", "--device", "cuda:99"]);
    assert!(err.contains("cuda:99"), "{err}");
    let err = fails(&["bench", "kernels", "--device", "cuda:99"]);
    assert!(err.contains("cuda:99"), "{err}");
}

#[test]
fn kernel_bench_on_the_emulator_counts_launches() {
    let out = ok(&["bench", "kernels", "--device", "emu", "--config", "mnist", "--json"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let kernels: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "kernel").collect();
    assert!(kernels.len() > 40, "{} kernel lines", kernels.len());
    for k in &kernels {
        assert!(k["time_us"].is_null(), "the emulator times nothing: {k}");
        assert!(k["counts"]["launches"].as_u64().is_some_and(|n| n >= 1), "{k}");
        assert!(k["h100_floor_us"].as_f64().is_some_and(|f| f > 0.0), "{k}");
        // The bf16 tensor-core floor: lower for the conv, linear and attention GEMMs
        // that are compute-bound in FP32, the FP32 floor for every other op.
        let (fp32, bf16) =
            (k["h100_floor_us"].as_f64().unwrap_or(0.0), k["h100_bf16_floor_us"].as_f64().unwrap_or(-1.0));
        let gemm =
            (k["op"] == "conv2d" && k["pass"] != "backward_bias") || k["op"] == "linear" || k["op"] == "attention";
        if gemm && k["bound"] == "compute" {
            assert!(bf16 < fp32, "{k}");
        } else if !gemm {
            assert_eq!(bf16, fp32, "{k}");
        }
        assert!(bf16 > 0.0 && bf16 <= fp32, "{k}");
    }
    let conv = kernels.iter().find(|k| k["op"] == "conv2d" && k["pass"] == "forward").expect("a conv2d forward line");
    // one launch of one of the forward's tile shapes (wide, narrow or few, picked from the channels)
    let fwd: Vec<(&String, &serde_json::Value)> = conv["counts"]["kernels"]
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("conv2d_fwd")).collect())
        .unwrap_or_default();
    assert!(fwd.len() == 1 && fwd[0].1["launches"].as_u64() == Some(1), "{conv}");
    let step = lines.iter().find(|l| l["kind"] == "step").expect("a step line");
    let launches = step["train_step"]["launches"].as_u64().unwrap_or(0);
    assert!(launches > 200, "{step}");
    let est = &step["h100_estimate_us"];
    let (graph, eager) = (est["cuda_graph"].as_f64().unwrap_or(0.0), est["eager_no_alloc"].as_f64().unwrap_or(0.0));
    assert!(graph > 0.0 && eager >= graph, "{est}");
    let (fp32, bf16) =
        (step["h100_floor_sum_us"].as_f64().unwrap_or(0.0), step["h100_bf16_floor_sum_us"].as_f64().unwrap_or(0.0));
    assert!(bf16 > 0.0 && bf16 < fp32, "{step}");
    // --precision bf16 routes the GEMM passes to the tensor-core kernels.
    let out = ok(&["bench", "kernels", "--device", "emu", "--config", "mnist", "--precision", "bf16", "--json"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let tc_kernel = |op: &str, pass: &str, prefix: &str| {
        let line = lines.iter().find(|l| l["op"] == op && l["pass"] == pass).expect("a line per pass");
        assert_eq!(line["precision"], "bf16", "{line}");
        let names =
            line["counts"]["kernels"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert!(names.iter().any(|n| n.starts_with(prefix)), "{op} {pass}: {names:?}");
    };
    tc_kernel("conv2d", "forward", "conv2d_fwd_tc_bf16");
    tc_kernel("conv2d", "backward_data", "conv2d_bwd_data_tc_bf16");
    tc_kernel("conv2d", "backward_weight", "conv2d_bwd_weight_tc_bf16");
    tc_kernel("linear", "forward", "linear_fwd_tc_bf16");
    tc_kernel("attention", "forward", "attention_fwd_tc_bf16");
    tc_kernel("attention", "backward", "attention_bwd_dkdv_tc_bf16");
    let norm = lines.iter().find(|l| l["op"] == "group_norm").expect("a group norm line");
    assert_eq!(norm["precision"], "fp32", "{norm}");
}

/// `bench step --precision bf16` on the emulator keeps the bf16-only
/// activations in bf16 (issue 13): the JSON line says so, and the step's
/// peak device memory is below the same step with `--f32-activations`.
#[test]
fn bench_step_reports_bf16_activation_storage() {
    let run = |extra: &[&str]| {
        let mut args = vec!["bench", "step", "--config", "tiny-mnist", "--batch-size", "2", "--device", "emu"];
        args.extend(["--precision", "bf16", "--steps", "1", "--warmup", "0", "--counters"]);
        args.extend(extra);
        let o = cli_common::command(&args).env("DIFFUSE_EMU_RACECHECK", "0").output().expect("run diffuse");
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "bench step {extra:?} failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
        let line: serde_json::Value = serde_json::from_str(out.lines().last().expect("a JSON line")).expect("JSON");
        (line["bf16_activations"].clone(), line["counters"]["pool_peak_reserved_bytes"].as_u64().expect("peak"))
    };
    let (on, peak_on) = run(&[]);
    let (off, peak_off) = run(&["--f32-activations"]);
    assert_eq!((on, off), (serde_json::Value::Bool(true), serde_json::Value::Bool(false)));
    assert!(peak_on < peak_off, "bf16 activations {peak_on} B, f32 {peak_off} B");
}
