//! A list of named scenarios run one after another against one cluster:
//! each is timed, a failure or panic is recorded and the next one runs, and
//! the end prints `scenario  pass/FAIL  duration`.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// One scenario's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    /// `None`: passed (or skipped).
    pub error: Option<String>,
    /// Why it did not run.
    pub skipped: Option<String>,
    pub duration: Duration,
}

/// The outcomes so far.
#[derive(Debug, Default)]
pub struct Suite {
    pub outcomes: Vec<Outcome>,
}

impl Suite {
    /// Runs `scenario`, timing it and catching its error or panic.
    pub fn run(&mut self, name: &str, scenario: impl FnOnce() -> anyhow::Result<()>) {
        eprintln!("=== {name}");
        let start = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(scenario));
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
            ),
        };
        let duration = start.elapsed();
        match &error {
            None => eprintln!("--- {name}: pass ({:.1} s)", duration.as_secs_f64()),
            Some(e) => eprintln!("--- {name}: FAIL ({:.1} s): {e}", duration.as_secs_f64()),
        }
        self.outcomes.push(Outcome {
            name: name.to_owned(),
            error,
            skipped: None,
            duration,
        });
    }

    /// Records a scenario that cannot run here, with the reason.
    pub fn skip(&mut self, name: &str, reason: &str) {
        eprintln!("--- {name}: skip ({reason})");
        self.outcomes.push(Outcome {
            name: name.to_owned(),
            error: None,
            skipped: Some(reason.to_owned()),
            duration: Duration::ZERO,
        });
    }

    /// The names of the failed scenarios.
    pub fn failed(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|o| o.error.is_some())
            .map(|o| o.name.as_str())
            .collect()
    }

    /// `scenario  pass/FAIL/skip  duration`, one line each, and the total
    /// (passed/all).
    pub fn table(&self) -> String {
        let width = self
            .outcomes
            .iter()
            .map(|o| o.name.len())
            .max()
            .unwrap_or(0)
            .max("scenario".len());
        let mut out = format!("{:width$}  result  duration\n", "scenario");
        for o in &self.outcomes {
            let result = match (&o.error, &o.skipped) {
                (Some(_), _) => "FAIL",
                (None, Some(_)) => "skip",
                (None, None) => "pass",
            };
            out.push_str(&format!(
                "{:width$}  {result:6}  {:7.1} s{}\n",
                o.name,
                o.duration.as_secs_f64(),
                o.skipped
                    .as_ref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
            ));
        }
        let total: Duration = self.outcomes.iter().map(|o| o.duration).sum();
        out.push_str(&format!(
            "{:width$}  {:6}  {:7.1} s\n",
            "total",
            format!(
                "{}/{}",
                self.outcomes
                    .iter()
                    .filter(|o| o.error.is_none() && o.skipped.is_none())
                    .count(),
                self.outcomes.len()
            ),
            total.as_secs_f64()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_panics_are_recorded_and_the_next_scenario_runs() {
        let mut suite = Suite::default();
        suite.run("ok", || Ok(()));
        suite.run("err", || anyhow::bail!("boom"));
        suite.run("panic", || panic!("bang"));
        suite.run("after", || Ok(()));
        suite.skip("later", "not here");
        assert_eq!(suite.failed(), vec!["err", "panic"]);
        assert_eq!(suite.outcomes[1].error.as_deref(), Some("boom"));
        assert_eq!(suite.outcomes[2].error.as_deref(), Some("bang"));
        let table = suite.table();
        assert!(table.contains("err       FAIL"), "{table}");
        assert!(table.contains("after     pass"), "{table}");
        assert!(table.contains("later     skip"), "{table}");
        assert!(table.contains("(not here)"), "{table}");
        assert!(table.contains("total     2/5"), "{table}");
    }
}
