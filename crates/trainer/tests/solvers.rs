//! The noise-level samplers (DPM-Solver++(2M), its SDE variant, Heun) with
//! exact analytic models instead of a network, so only the sampler is under
//! test: (a) against the closed-form probability-flow map of a Gaussian and
//! its convergence order, (b) against diffusers' trajectories for the exact
//! eps of a Gaussian mixture (fixture made by scripts/make-sampler-fixtures.py).

use diffuse_tensor::{ops, DType, Device, Tensor};
use diffuse_trainer::diffusion::{Diffusion, Schedule, Target};
use diffuse_trainer::noise_levels::{alpha_of, NoiseLevels, Spacing};
use diffuse_trainer::solvers::{dpmpp_2m, heun, Denoiser, NoiseSource};
use diffuse_trainer::Result;

/// Per-pixel mixture of Gaussians (weight, mean, std), the same for every pixel,
/// or one Gaussian per pixel (`per_pixel`).
struct Exact {
    mix: Vec<(f64, f64, f64)>,
    per_pixel: Option<(Vec<f64>, Vec<f64>)>,
    calls: usize,
}

impl Exact {
    fn x0(&self, x: f64, sigma: f64, i: usize) -> f64 {
        let a = alpha_of(sigma);
        let b = a * sigma;
        if let Some((mu, s)) = &self.per_pixel {
            let v = a * a * s[i] * s[i] + b * b;
            return mu[i] + a * s[i] * s[i] * (x - a * mu[i]) / v;
        }
        let comps: Vec<(f64, f64)> = self
            .mix
            .iter()
            .map(|&(w, m, s)| {
                let v = a * a * s * s + b * b;
                (w.ln() - 0.5 * v.ln() - (x - a * m).powi(2) / (2.0 * v), m + a * s * s * (x - a * m) / v)
            })
            .collect();
        let top = comps.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max);
        let (num, den) = comps.iter().fold((0.0, 0.0), |(n, d), &(lw, m)| {
            let w = (lw - top).exp();
            (n + w * m, d + w)
        });
        num / den
    }
}

impl Denoiser for Exact {
    fn predict(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        self.calls += 1;
        let xs = x.to_vec_f64()?;
        let a = alpha_of(sigma);
        let x0: Vec<f64> = xs.iter().enumerate().map(|(i, &v)| self.x0(v, sigma, i)).collect();
        let eps: Vec<f64> = xs.iter().zip(&x0).map(|(&v, &d)| (v - a * d) / (a * sigma)).collect();
        let shape = x.dims().to_vec();
        Ok((Tensor::from_vec(eps, shape.clone())?, Tensor::from_vec(x0, shape)?))
    }
}

/// The fixture's noise, step by step.
struct Recorded(Vec<Vec<f64>>);

impl NoiseSource for Recorded {
    fn add_noise(&mut self, mean: &Tensor, std: f64, step: usize) -> Result<Tensor> {
        let m = mean.to_vec_f64()?;
        let v: Vec<f64> = m.iter().zip(&self.0[step]).map(|(a, z)| a + std * z).collect();
        Ok(Tensor::from_vec(v, mean.dims().to_vec())?)
    }
}

/// Philox noise, as the CLI's SDE sampler draws it.
struct Philox(u64);

impl NoiseSource for Philox {
    fn add_noise(&mut self, mean: &Tensor, std: f64, step: usize) -> Result<Tensor> {
        let n = mean.dims()[0];
        let ones = Tensor::full([n], 1.0, DType::F64, &Device::Cpu)?;
        let sig = Tensor::full([n], std, DType::F64, &Device::Cpu)?;
        Ok(ops::noise_add(mean, &ones, &sig, self.0, step as u32, 99)?.x_t)
    }
}

fn gaussian(n: usize) -> (Exact, Vec<f64>, Vec<f64>) {
    // Awkward, different parameters per pixel.
    let mu: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 / 11.0 - 0.5) * 1.4).collect();
    let s: Vec<f64> = (0..n).map(|i| 0.1 + (i * 13 % 7) as f64 / 10.0).collect();
    (Exact { mix: vec![], per_pixel: Some((mu.clone(), s.clone())), calls: 0 }, mu, s)
}

/// The probability-flow map of N(mu, s^2) from sigma_a to sigma_b, in the model's scale.
fn exact_flow(x: &[f64], mu: &[f64], s: &[f64], sa: f64, sb: f64) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let z = v / alpha_of(sa);
            let zb = mu[i] + (z - mu[i]) * ((s[i] * s[i] + sb * sb) / (s[i] * s[i] + sa * sa)).sqrt();
            zb * alpha_of(sb)
        })
        .collect()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn start(n: usize, seed: u64) -> Tensor {
    Tensor::randn([n, 1, 3, 5], seed, 3, DType::F64, &Device::Cpu).unwrap()
}

type Solve = fn(&mut Exact, &Tensor, &[f64]) -> Tensor;

fn solve_dpm(den: &mut Exact, x: &Tensor, s: &[f64]) -> Tensor {
    dpmpp_2m(den, None, x, s, |_, _| Ok(())).unwrap()
}

fn solve_heun(den: &mut Exact, x: &Tensor, s: &[f64]) -> Tensor {
    heun(den, x, s, |_, _| Ok(())).unwrap()
}

fn log_spaced(hi: f64, lo: f64, steps: usize) -> Vec<f64> {
    (0..=steps).map(|i| (hi.ln() + (lo.ln() - hi.ln()) * i as f64 / steps as f64).exp()).collect()
}

#[test]
fn deterministic_samplers_converge_at_second_order_to_the_gaussian_flow() {
    let x = start(4, 11);
    let xs = x.to_vec_f64().unwrap();
    let (_, mu, s) = gaussian(xs.len());
    let (hi, lo) = (80.0, 0.05);
    let want = exact_flow(&xs, &mu, &s, hi, lo);
    for (name, solve) in [("dpm++2m", solve_dpm as Solve), ("heun", solve_heun as Solve)] {
        let errs: Vec<f64> = [8, 16, 32, 64]
            .iter()
            .map(|&n| {
                let (mut den, _, _) = gaussian(xs.len());
                let got = solve(&mut den, &x, &log_spaced(hi, lo, n)).to_vec_f64().unwrap();
                max_err(&got, &want)
            })
            .collect();
        let ratios: Vec<f64> = errs.windows(2).map(|p| p[0] / p[1]).collect();
        // Halving h divides the error by 4 (second order; first order would be 2).
        assert!(ratios[1..].iter().all(|r| (3.3..4.8).contains(r)), "{name}: errors {errs:?} ratios {ratios:?}");
        assert!(errs[3] < 4e-3, "{name}: {errs:?}");
    }
}

#[test]
fn full_samplers_reach_the_gaussian_closed_form() {
    let d = Diffusion::new(Schedule::Linear, 1000, Target::Eps).unwrap();
    let levels = NoiseLevels::new(&d);
    let x = start(4, 12);
    let xs = x.to_vec_f64().unwrap();
    let (_, mu, s) = gaussian(xs.len());
    let want = exact_flow(&xs, &mu, &s, levels.sigma_max(), 0.0);
    for spacing in [Spacing::Uniform, Spacing::LogSnr, Spacing::Karras] {
        for (name, solve) in [("dpm++2m", solve_dpm as Solve), ("heun", solve_heun as Solve)] {
            let (mut den, _, _) = gaussian(xs.len());
            let sigmas = levels.sigmas(spacing, 100).unwrap();
            let got = solve(&mut den, &x, &sigmas).to_vec_f64().unwrap();
            let err = max_err(&got, &want);
            // The last step returns E[x0 | x] at the smallest level, not the
            // flow's end: O(sigma^2 / s^2), larger for the uniform spacing's
            // last level (t = 10).
            let tol = if spacing == Spacing::Uniform { 0.05 } else { 3e-3 };
            assert!(err < tol, "{name} {spacing:?}: {err}");
            let calls = if name == "heun" { 199 } else { 100 };
            assert_eq!(den.calls, calls, "{name}");
        }
    }
}

#[test]
fn sde_sampler_matches_the_gaussian_distribution() {
    let d = Diffusion::new(Schedule::Linear, 1000, Target::Eps).unwrap();
    let levels = NoiseLevels::new(&d);
    let (mu, s) = (0.3, 0.4);
    let n = 256;
    let x = Tensor::randn([n, 1, 4, 4], 5, 3, DType::F64, &Device::Cpu).unwrap();
    let mut den = Exact { mix: vec![(1.0, mu, s)], per_pixel: None, calls: 0 };
    let sigmas = levels.sigmas(Spacing::Karras, 40).unwrap();
    let out = dpmpp_2m(&mut den, Some(&mut Philox(1)), &x, &sigmas, |_, _| Ok(())).unwrap();
    let v = out.to_vec_f64().unwrap();
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    // 4096 draws: the standard errors are 0.006 (mean) and 0.0045 (std).
    assert!((m - mu).abs() < 0.025 && (sd - s).abs() < 0.02, "mean {m} std {sd}");
    // And it is stochastic: a different seed, different samples; the same, the same bits.
    let again = dpmpp_2m(&mut den, Some(&mut Philox(1)), &x, &sigmas, |_, _| Ok(())).unwrap();
    assert_eq!(again.to_vec_f64().unwrap(), v);
    let other = dpmpp_2m(&mut den, Some(&mut Philox(2)), &x, &sigmas, |_, _| Ok(())).unwrap();
    assert!(max_err(&other.to_vec_f64().unwrap(), &v) > 0.1);
}

#[derive(serde::Deserialize)]
struct Fixture {
    mixture: Vec<Component>,
    shape: Vec<usize>,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Component {
    weight: f64,
    mean: f64,
    std: f64,
}

#[derive(serde::Deserialize)]
struct Case {
    sampler: String,
    schedule: String,
    spacing: String,
    steps: usize,
    sigmas: Vec<f64>,
    states: Vec<Vec<f64>>,
    noise: Vec<Vec<f64>>,
}

#[test]
fn trajectories_match_diffusers() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sampler_trajectories.json")).unwrap();
    let fx: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fx.cases.len(), 8);
    for c in &fx.cases {
        let label = format!("{} {} {} {}", c.sampler, c.schedule, c.spacing, c.steps);
        // Our levels are diffusers' up to its float32 alphas_cumprod: 1 - abar
        // at t = 0 is 1e-4 with an f32 rounding error of ~6e-8, so sigma_min
        // differs by ~3e-4 relative, and Karras levels near it with it.
        let d = Diffusion::new(c.schedule.parse().unwrap(), 1000, Target::Eps).unwrap();
        let ours = NoiseLevels::new(&d).sigmas(c.spacing.parse().unwrap(), c.steps).unwrap();
        assert_eq!(ours.len(), c.sigmas.len(), "{label}");
        for (a, b) in ours.iter().zip(&c.sigmas) {
            assert!((a - b).abs() <= 5e-4 * b, "{label}: sigma {a} vs {b}");
        }
        // The trajectory on diffusers' own levels: the solver's arithmetic
        // alone, to float32 rounding (largest seen 1.5e-5; diffusers computes alpha, sigma and h
        // from its float32 sigmas in float32; a wrong coefficient is ~1e-2).
        let mix = fx.mixture.iter().map(|m| (m.weight, m.mean, m.std)).collect();
        let mut den = Exact { mix, per_pixel: None, calls: 0 };
        let x = Tensor::from_vec(c.states[0].clone(), fx.shape.clone()).unwrap();
        let mut states = Vec::new();
        let record = |_: usize, x: &Tensor| {
            states.push(x.to_vec_f64()?);
            Ok(())
        };
        let out = match c.sampler.as_str() {
            "dpm++2m" => dpmpp_2m(&mut den, None, &x, &c.sigmas, record),
            "dpm++2m-sde" => dpmpp_2m(&mut den, Some(&mut Recorded(c.noise.clone())), &x, &c.sigmas, record),
            "heun" => heun(&mut den, &x, &c.sigmas, record),
            other => panic!("unknown sampler {other}"),
        }
        .unwrap();
        states.push(out.to_vec_f64().unwrap());
        assert_eq!(states.len(), c.states.len(), "{label}");
        for (i, (a, b)) in states.iter().zip(&c.states).enumerate() {
            let err = max_err(a, b);
            assert!(err < 5e-5, "{label}: state {i} differs by {err}");
        }
    }
}
