//! A progress bar with loss and images/s on a terminal; plain log lines
//! otherwise (CI logs, pipes).

use diffuse_trainer::train::{Observer, StepMetrics};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new() -> Self {
        Progress { bar: None }
    }
}

impl Observer for Progress {
    fn start(&mut self, first: u64, total: u64) {
        if std::io::stdout().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(first);
            self.bar = Some(bar);
        } else if first < total {
            println!("training steps {}..{}", first + 1, total);
        } else {
            println!("no steps to train: the run is at step {first} of {total}");
        }
    }

    fn step(&mut self, m: &StepMetrics) {
        let msg = format!("loss {:.4}  lr {:.2e}  |g| {:.3}  {:.1} img/s", m.loss, m.lr, m.grad_norm, m.images_per_s);
        match &self.bar {
            Some(b) => {
                b.set_position(m.step);
                b.set_message(msg);
            }
            None => println!("step {:>6}  {msg}", m.step),
        }
    }

    fn message(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => println!("{msg}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
