//! Progress display: indicatif bars on a terminal, plain log lines otherwise (CI logs, files, pipes), so
//! redirected output never fills with carriage returns.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain-text run prints a step line: often enough to watch, rarely enough to read.
const PLAIN_LINE_EVERY_STEPS: usize = 10;

/// Reports epochs and steps.
pub enum Progress {
    Bar {
        bar: ProgressBar,
    },
    Plain {
        steps_per_epoch: usize,
        epochs: usize,
    },
    /// Ranks other than 0 of a data-parallel run: rank 0 reports for all.
    Silent,
}

impl Progress {
    /// A bar when stderr is a terminal, else plain lines.
    pub fn new(epochs: usize, steps_per_epoch: usize) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(steps_per_epoch as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(500));
            Self::Bar { bar }
        } else {
            Self::Plain { steps_per_epoch, epochs }
        }
    }

    /// A new epoch starts.
    pub fn start_epoch(&self, epoch: usize, epochs: usize) {
        match self {
            Self::Bar { bar } => {
                bar.reset();
                bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
            }
            Self::Plain { .. } => tracing::info!("epoch {}/{}", epoch + 1, epochs),
            Self::Silent => {}
        }
    }

    /// An optimizer step finished.
    pub fn step(&self, epoch: usize, step_in_epoch: usize, loss: f64, samples_per_s: f64) {
        match self {
            Self::Bar { bar } => {
                bar.set_position(step_in_epoch as u64 + 1);
                bar.set_message(format!("loss {loss:.4} {samples_per_s:.1} samples/s"));
            }
            Self::Plain { steps_per_epoch, epochs } => {
                let n = step_in_epoch + 1;
                if n.is_multiple_of(PLAIN_LINE_EVERY_STEPS) || n == *steps_per_epoch {
                    tracing::info!(
                        "epoch {}/{} step {n}/{steps_per_epoch} loss {loss:.4} {samples_per_s:.2} samples/s",
                        epoch + 1,
                        epochs
                    );
                }
            }
            Self::Silent => {}
        }
    }

    /// A message that must not be overwritten by the bar.
    pub fn println(&self, line: &str) {
        match self {
            Self::Bar { bar } => bar.println(line),
            Self::Plain { .. } => tracing::info!("{line}"),
            Self::Silent => {}
        }
    }

    pub fn finish(&self) {
        if let Self::Bar { bar } = self {
            bar.finish_and_clear();
        }
    }
}
