//! A progress bar over the library's counters, drawn only on a terminal.

use drctl::base::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub struct Bar {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn start(p: Arc<Progress>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Bar {
                task: None,
                bar: None,
            };
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_prefix(p.phase());
                b.set_length(
                    p.total
                        .load(Ordering::Relaxed)
                        .max(p.bytes.load(Ordering::Relaxed)),
                );
                b.set_position(p.bytes.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Bar {
            task: Some(task),
            bar: Some(bar),
        }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
