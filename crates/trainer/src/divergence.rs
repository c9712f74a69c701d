//! Divergence detection: a loss that is not finite, or that is more than a
//! factor times the running mean of the losses before it, stops the run
//! before its optimiser step (so the weights on disk stay those of the last
//! checkpoint from before it).
//!
//! The running mean is an exponential moving average with bias correction,
//! and the reference is its lowest value so far: a run that blows up does
//! so over a few steps (`--lr 100` grows the loss 47x, then 125x, then 14x
//! per step), and a mean that followed it would never be passed. Both are
//! saved in every checkpoint, so a resumed run watches exactly as an
//! uninterrupted one would.

/// The default `--divergence-factor`. Per-batch diffusion losses are noisy
/// (a small batch of small timesteps can cost 10-30 times the mean late in
/// training) and an untrained model's loss is about 1, so 100 times the
/// lowest mean is past both; a run that blows up passes it within steps.
pub const DEFAULT_FACTOR: f64 = 100.0;

/// Weight of the newest loss in the running mean (about a 50-step memory).
const NEW_WEIGHT: f64 = 0.02;

/// The running mean of the losses of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWatch {
    /// The moving average before bias correction.
    pub average: f64,
    /// Losses folded in so far.
    pub count: u64,
    /// The lowest bias-corrected mean so far (infinite before the first loss).
    pub lowest_mean: f64,
}

impl Default for LossWatch {
    fn default() -> Self {
        LossWatch { average: 0.0, count: 0, lowest_mean: f64::INFINITY }
    }
}

impl LossWatch {
    /// The bias-corrected running mean (`None` before the first loss).
    pub fn mean(&self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // (1 - w)^count underflows to 0 long before count leaves i32.
        let kept = (1.0 - NEW_WEIGHT).powi(self.count.min(100_000) as i32);
        Some(self.average / (1.0 - kept))
    }

    /// Why `loss` counts as divergence under `factor` (0 disables the
    /// factor test; a loss that is not finite always diverges).
    pub fn check(&self, loss: f64, factor: f64) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("the loss is {loss}"));
        }
        let mean = self.mean()?;
        if factor > 0.0 && loss > factor * self.lowest_mean {
            return Some(format!(
                "the loss {loss:.4e} is more than {factor} times its running mean ({mean:.4e} now, {:.4e} at its \
                 lowest; --divergence-factor)",
                self.lowest_mean
            ));
        }
        None
    }

    /// Folds a (finite) loss into the mean.
    pub fn update(&mut self, loss: f64) {
        self.average = (1.0 - NEW_WEIGHT) * self.average + NEW_WEIGHT * loss;
        self.count += 1;
        self.lowest_mean = self.lowest_mean.min(self.mean().unwrap_or(f64::INFINITY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bias_corrected_mean_matches_the_weighted_mean_of_the_losses() {
        let losses: Vec<f64> = (0..37).map(|i| 0.3 + 0.7 * ((i * 7919 % 13) as f64 / 13.0)).collect();
        let mut w = LossWatch::default();
        assert_eq!(w.mean(), None);
        for &l in &losses {
            w.update(l);
        }
        // Independent reference: weights (1-w)^(n-1-i), normalised.
        let n = losses.len();
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &l) in losses.iter().enumerate() {
            let weight = (1.0 - NEW_WEIGHT).powi((n - 1 - i) as i32);
            num += weight * l;
            den += weight;
        }
        let mean = w.mean().unwrap();
        assert!((mean - num / den).abs() < 1e-12, "{mean} vs {}", num / den);
    }

    #[test]
    fn non_finite_losses_and_jumps_past_the_factor_diverge_and_noise_does_not() {
        let mut w = LossWatch::default();
        assert!(w.check(f64::NAN, 0.0).unwrap().contains("NaN"));
        assert!(w.check(f64::INFINITY, 10.0).unwrap().contains("inf"));
        // Nothing to compare the first loss with.
        assert_eq!(w.check(1000.0, 10.0), None);
        for _ in 0..30 {
            w.update(0.1);
        }
        assert_eq!(w.check(0.99, 10.0), None);
        assert!(w.check(1.01, 10.0).unwrap().contains("running mean"));
        assert_eq!(w.check(1e9, 0.0), None, "factor 0 disables the test");
        assert!(w.check(f64::NAN, 0.0).is_some(), "but never for a NaN");
        // A loss that creeps up by less than the factor per step is still
        // caught against the lowest mean, not the one that followed it.
        let mut loss = 0.1;
        let mut stopped = None;
        for step in 0..100 {
            if w.check(loss, 10.0).is_some() {
                stopped = Some(step);
                break;
            }
            w.update(loss);
            loss *= 1.5;
        }
        // 0.1 * 1.5^k > 10 * 0.1 first at k = 6.
        assert_eq!(stopped, Some(6));
    }
}
