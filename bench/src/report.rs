//! Figures and the table: percentiles of latency samples, one row per scenario metric,
//! one column per server, and the kairan/Synapse ratios.

use std::{fmt::Write as _, time::Duration};

use crate::servers::Kind;

/// Whether a bigger figure is better (throughput) or worse (latency, memory, size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One figure of one scenario on one server.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub better: Better,
    pub value: f64,
}

impl Metric {
    pub fn new(name: impl Into<String>, unit: &'static str, better: Better, value: f64) -> Self {
        Self { name: name.into(), unit, better, value }
    }

    pub fn throughput(name: &str, per_second: f64) -> Self {
        Self::new(name, "/s", Better::Higher, per_second)
    }

    pub fn millis(name: &str, d: Duration) -> Self {
        Self::new(name, "ms", Better::Lower, d.as_secs_f64() * 1000.0)
    }

    pub fn seconds(name: &str, d: Duration) -> Self {
        Self::new(name, "s", Better::Lower, d.as_secs_f64())
    }

    /// Peak memory and CPU time of a measured phase.
    pub fn usage(usage: &crate::servers::Usage) -> Vec<Self> {
        vec![
            Self::mib("peak RSS", usage.peak_rss),
            Self::seconds("server CPU time", usage.server_cpu),
            Self::seconds("benchmark client CPU time", usage.driver_cpu),
        ]
    }

    pub fn mib(name: &str, bytes: u64) -> Self {
        Self::new(name, "MiB", Better::Lower, bytes as f64 / (1024.0 * 1024.0))
    }

    /// p50, p95 and p99 of `samples`, named `"{what} p50"` etc.
    pub fn percentiles(what: &str, samples: &mut [Duration]) -> Vec<Self> {
        [50.0, 95.0, 99.0].into_iter().map(|p| Self::millis(&format!("{what} p{p}"), percentile(samples, p))).collect()
    }
}

/// The `p`th percentile (nearest rank) of `samples`; zero when there are none.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// What one scenario gave on one server: its figures, or why it did not run.
#[derive(Clone, Debug)]
pub enum Outcome {
    Ran { metrics: Vec<Metric>, size: String },
    Failed(String),
}

/// Every outcome of the run, in order.
#[derive(Default)]
pub struct Table {
    pub rows: Vec<(String, Kind, Outcome)>,
    /// Results that are not per server (the federation scenario mixes servers).
    pub extra: Vec<(String, Outcome)>,
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Table {
    /// The markdown table: scenario, metric, one column per server, then kairan ÷ Synapse
    /// for each kairan column (with ↑/↓ saying which way is better).
    pub fn markdown(&self, kinds: &[Kind]) -> String {
        let mut out = String::new();
        if self.rows.is_empty() {
            return self.markdown_extra(out);
        }
        let kairans: Vec<Kind> = kinds.iter().copied().filter(|k| k.is_kairan()).collect();
        let has_synapse = kinds.contains(&Kind::Synapse);
        let mut header = vec!["scenario".to_owned(), "metric".to_owned()];
        header.extend(kinds.iter().map(|k| k.to_string()));
        if has_synapse {
            header.extend(kairans.iter().map(|k| format!("{k} ÷ Synapse")));
        }
        writeln!(out, "| {} |", header.join(" | ")).ok();
        writeln!(out, "|{}", " --- |".repeat(header.len())).ok();

        let mut scenarios: Vec<&str> = Vec::new();
        for (s, _, _) in &self.rows {
            if !scenarios.contains(&s.as_str()) {
                scenarios.push(s);
            }
        }
        for scenario in scenarios {
            let outcome =
                |kind: Kind| self.rows.iter().find(|(s, k, _)| s == scenario && *k == kind).map(|(_, _, o)| o);
            // Sizes, then failures, as their own rows.
            let mut cells = vec![scenario.to_owned(), "size".to_owned()];
            for &kind in kinds {
                cells.push(match outcome(kind) {
                    Some(Outcome::Ran { size, .. }) => size.clone(),
                    Some(Outcome::Failed(why)) => format!("**failed**: {}", why.replace('|', "/").replace('\n', " ")),
                    None => "not run".to_owned(),
                });
            }
            if has_synapse {
                cells.extend(kairans.iter().map(|_| String::new()));
            }
            writeln!(out, "| {} |", cells.join(" | ")).ok();

            let mut names: Vec<(String, &'static str, Better)> = Vec::new();
            for &kind in kinds {
                if let Some(Outcome::Ran { metrics, .. }) = outcome(kind) {
                    for m in metrics {
                        if !names.iter().any(|(n, _, _)| *n == m.name) {
                            names.push((m.name.clone(), m.unit, m.better));
                        }
                    }
                }
            }
            for (name, unit, better) in names {
                let value = |kind: Kind| match outcome(kind) {
                    Some(Outcome::Ran { metrics, .. }) => metrics.iter().find(|m| m.name == name).map(|m| m.value),
                    _ => None,
                };
                let arrow = if better == Better::Higher { "↑" } else { "↓" };
                let mut cells = vec![String::new(), format!("{name} ({unit}) {arrow}")];
                cells.extend(kinds.iter().map(|&k| value(k).map(fmt_value).unwrap_or_else(|| "–".to_owned())));
                if has_synapse {
                    for &k in &kairans {
                        cells.push(match (value(k), value(Kind::Synapse)) {
                            (Some(a), Some(b)) if b > 0.0 => format!("{}×", fmt_value(a / b)),
                            _ => "–".to_owned(),
                        });
                    }
                }
                writeln!(out, "| {} |", cells.join(" | ")).ok();
            }
        }

        self.markdown_extra(out)
    }

    /// The results that are not per server, each as its own small table.
    fn markdown_extra(&self, mut out: String) -> String {
        for (scenario, outcome) in &self.extra {
            writeln!(out, "\n**{scenario}**\n").ok();
            match outcome {
                Outcome::Ran { metrics, size } => {
                    writeln!(out, "{size}\n\n| metric | value |\n| --- | --- |").ok();
                    for m in metrics {
                        writeln!(out, "| {} ({}) | {} |", m.name, m.unit, fmt_value(m.value)).ok();
                    }
                }
                Outcome::Failed(why) => {
                    writeln!(out, "failed: {why}").ok();
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&mut samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&mut samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&mut [], 50.0), Duration::ZERO);
        assert_eq!(percentile(&mut [Duration::from_millis(7)], 99.0), Duration::from_millis(7));
    }

    #[test]
    fn ratios_are_kairan_over_synapse() {
        let mut table = Table::default();
        let ran = |v| Outcome::Ran { metrics: vec![Metric::throughput("sent", v)], size: "s".into() };
        table.rows.push(("send".into(), Kind::KairanSqlite, ran(3000.0)));
        table.rows.push(("send".into(), Kind::Synapse, ran(100.0)));
        let md = table.markdown(&[Kind::KairanSqlite, Kind::Synapse]);
        assert!(md.contains("| sent (/s) ↑ | 3000 | 100 | 30.0× |"), "{md}");
    }
}
