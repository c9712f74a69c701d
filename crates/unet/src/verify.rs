//! Checks one training step against a test-vector file written by
//! ../shared/reference/make_vectors.py: forward output, loss and every
//! parameter gradient, as relative errors (norm of difference / norm of
//! reference).

use crate::io::{load_params, metadata, parse, view_to_tensor};
use crate::{Result, UNet, UNetConfig, UNetError};
use diffuse_tensor::{ops, DType, Device, Precision, Tensor};
use safetensors::SafeTensors;

/// The worst errors of one step.
#[derive(Clone, Debug)]
pub struct StepErrors {
    pub output: f64,
    pub loss: f64,
    pub worst_grad: f64,
    pub worst_grad_name: String,
    /// Every parameter's gradient error, in parameter order.
    pub grads: Vec<(String, f64)>,
    pub params: usize,
}

impl StepErrors {
    pub fn max(&self) -> f64 {
        self.output.max(self.loss).max(self.worst_grad)
    }
}

pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
    let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// A gradient whose norm is below this fraction of the whole model's
/// gradient norm is treated as analytically zero.
pub const ANALYTIC_ZERO: f64 = 1e-4;

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn get(st: &SafeTensors<'_>, name: &str) -> Result<Tensor> {
    let v = st.tensor(name).map_err(|_| UNetError::MissingParam(name.to_string()))?;
    view_to_tensor(name, &v)
}

/// Runs the file's training step on `device` in `dtype` and compares.
/// The accepted relative error of a whole training step (output, loss and
/// every gradient, each ||ours - f64|| / ||f64||) at a precision. fp32:
/// float32 rounding through the model, measured at <= 6e-6 (mnist vector).
/// Rounded GEMM inputs: one GEMM's relative error is about 2u (u = 2^-8 for
/// bf16, 2^-11 for tf32; both operands rounded) and the ~60 GEMMs of a
/// forward and backward compound it, mostly independently (~sqrt(60) * 2u
/// ~ 16u). One gradient is worse conditioned: the output layer's bias
/// gradient is the sum of the residual (prediction - noise) over every
/// pixel, a cancelling sum whose relative error is the prediction's times
/// ||r||_1 / |sum r|; a factor 2 for it gives the bound 32u: 1.25e-1
/// (bf16), 1.56e-2 (tf32). Measured worst (CPU, every product rounded,
/// attention's too): tiny vector 6.51e-2 (bf16, ~17u) and 9.85e-3 (tf32,
/// ~20u), both conv_out.bias; mnist vector 1.93e-2 (bf16) and 2.22e-3
/// (tf32), an attention projection.
pub fn step_tolerance(p: Precision) -> f64 {
    match p {
        Precision::Fp32 => 1e-4,
        _ => 32.0 * p.input_unit_roundoff(),
    }
}

pub fn verify_step(bytes: &[u8], device: &Device, dtype: DType) -> Result<StepErrors> {
    verify_step_with(bytes, device, dtype, Precision::Fp32)
}

/// [`verify_step`] with the convolutions', linear layers' and attention's GEMMs at
/// `precision` (tensor cores on a GPU, the rounding reference on the CPU).
pub fn verify_step_with(bytes: &[u8], device: &Device, dtype: DType, precision: Precision) -> Result<StepErrors> {
    let meta = metadata(bytes)?;
    let cfg_json =
        meta.get("config").ok_or_else(|| UNetError::Safetensors("the file's metadata has no \"config\"".into()))?;
    let config = UNetConfig::from_json(cfg_json)?;
    let st = parse(bytes)?;
    let mut model = UNet::new(config, 0, dtype, device)?;
    load_params(&mut model.params, &st, "param.")?;
    model.params.set_precision(precision);

    let on = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(dtype)?.to_device(device)?) };
    let x_t = on(get(&st, "input.x_t")?)?;
    let t = on(get(&st, "input.t")?)?;
    let noise = on(get(&st, "input.noise")?)?;
    // A class-conditional step also has its labels (the null class included).
    let labels: Option<Vec<usize>> = if model.config.is_conditional() {
        let l = get(&st, "input.labels")?.to_vec_f64()?;
        Some(l.iter().map(|&v| if v >= 0.0 { v as usize } else { usize::MAX }).collect())
    } else {
        None
    };

    let (eps, cache) = model.forward_train_cond(&x_t, &t, labels.as_deref(), crate::ForwardMode::train(0, 0))?;
    let loss = ops::mse_loss_forward(&eps, &noise)?;
    let deps = ops::mse_loss_backward(&eps, &noise, 1.0)?;
    model.params.zero_grads();
    model.backward(&cache, &deps)?;

    let output = rel_err(&eps.to_vec_f64()?, &get(&st, "output.eps_pred")?.to_vec_f64()?);
    let loss_err = rel_err(&loss.to_vec_f64()?, &get(&st, "output.loss")?.to_vec_f64()?);
    let mut pairs = Vec::with_capacity(model.params.len());
    for id in model.params.ids() {
        let name = model.params.name(id).to_string();
        let want = get(&st, &format!("grad.{name}"))?.to_vec_f64()?;
        let got = match model.params.grad(id) {
            Some(g) => g.to_vec_f64()?,
            None => vec![0.0; want.len()],
        };
        if got.len() != want.len() {
            return Err(UNetError::ParamShape { name, expected: vec![want.len()], got: vec![got.len()] });
        }
        pairs.push((name, got, want));
    }
    // Some gradients are analytically zero (attention's key bias: softmax
    // ignores a shift shared by all keys), so PyTorch stores rounding noise
    // there and a plain relative error divides noise by noise. Those are
    // measured against the whole model's gradient norm instead. At a
    // reduced precision the attention's weights and score gradients enter
    // the tensor cores rounded, so the shift the softmax ignores is cancelled
    // only to the input rounding: those gradients are measured against u_in
    // times the whole norm (tiny vector, key bias at tf32: ~0.006 u_in of it).
    let total: f64 = pairs.iter().flat_map(|(_, _, w)| w.iter()).map(|w| w * w).sum::<f64>().sqrt();
    let floor = ANALYTIC_ZERO * total;
    let zero_floor = ANALYTIC_ZERO.max(precision.input_unit_roundoff()) * total;
    let grads: Vec<(String, f64)> = pairs
        .into_iter()
        .map(|(name, got, want)| {
            let want_norm = norm(&want);
            let den = if want_norm < floor { zero_floor } else { want_norm };
            let num = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            (name, if den == 0.0 { num } else { num / den })
        })
        .collect();
    let (worst_grad_name, worst_grad) =
        grads
            .iter()
            .cloned()
            .fold((String::new(), 0.0), |acc, (n, e)| if e > acc.1 || acc.0.is_empty() { (n, e) } else { acc });
    Ok(StepErrors { output, loss: loss_err, worst_grad, worst_grad_name, grads, params: model.num_params() })
}
