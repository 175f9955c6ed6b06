//! How results are printed: plain text as they come, markdown for files.

use std::fmt::Write as _;

use crate::{load::GroupResult, server::Memory};

/// The machine, for report headers.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: format!("Linux {kernel}"),
            memory_gib,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{}, {} cores, {:.0} GiB, {}",
            self.cpu, self.cores, self.memory_gib, self.kernel
        )
    }
}

/// The 1-, 5- and 15-minute load averages: other work on the same cores
/// shows here, and lowers every throughput measured meanwhile.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

pub fn now_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Microseconds as milliseconds, about three significant digits.
pub fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Calls per second, grouped for reading.
pub fn rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        let whole = per_second.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{per_second:.1}")
    }
}

/// Errors as `CODE/REASON n, …`, or `none`.
pub fn errors(result: &GroupResult) -> String {
    let by_kind = result.errors_by_kind();
    if by_kind.is_empty() {
        return "none".to_owned();
    }
    by_kind
        .iter()
        .map(|(failure, n)| {
            if failure.reason.is_empty() {
                format!("{} {n}", failure.code)
            } else {
                format!("{}/{} {n}", failure.code, failure.reason)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plain-text block for one group.
pub fn text(result: &GroupResult, memory: Option<Memory>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} concurrent over {} connection(s), {:.1} s measured",
        result.name,
        result.concurrency,
        result.connections,
        result.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  throughput  {} calls/s ({} ok, {} errors = {}/s{})",
        rate(result.throughput()),
        result.ok(),
        result.error_count(),
        rate(result.error_rate()),
        if result.abandoned > 0 {
            format!(
                ", {} calls abandoned after the grace period",
                result.abandoned
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "  latency     {}", latencies(&result.total));
    if result.ops.len() > 1 {
        for (op, hist) in result.ops.iter().zip(&result.per_op) {
            let _ = writeln!(
                out,
                "    {op:<11} {:>9} calls/s  {}",
                rate(crate::load::per_second(hist.len(), result.elapsed)),
                latencies(hist)
            );
        }
    }
    let _ = writeln!(out, "  errors      {}", errors(result));
    if let Some(memory) = memory {
        let _ = writeln!(
            out,
            "  server RSS  peak {} (VmHWM), now {}",
            mib(memory.peak_kib),
            mib(memory.rss_kib)
        );
    }
    out
}

fn latencies(hist: &hdrhistogram::Histogram<u64>) -> String {
    if hist.is_empty() {
        return "no successful calls".to_owned();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.9)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.value_at_quantile(0.999)),
        ms(hist.max())
    )
}

/// Header of the per-scenario markdown table.
pub const SCENARIO_TABLE_HEAD: &str = "| scenario | concurrency | connections | calls/s | p50 | p90 | p99 | p99.9 | errors | server peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n";

/// One row of that table (and one per operation of a blend).
pub fn markdown_row(result: &GroupResult, memory: Option<Memory>) -> String {
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            "–".to_owned()
        } else {
            ms(h.value_at_quantile(q))
        }
    };
    let mut out = format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        result.name,
        result.concurrency,
        result.connections,
        rate(result.throughput()),
        q(&result.total, 0.5),
        q(&result.total, 0.9),
        q(&result.total, 0.99),
        q(&result.total, 0.999),
        errors(result),
        memory.map_or_else(|| "–".to_owned(), |m| mib(m.peak_kib)),
    );
    if result.ops.len() > 1 {
        for (op, hist) in result.ops.iter().zip(&result.per_op) {
            let _ = writeln!(
                out,
                "| &nbsp;&nbsp;{} {op} | | | {} | {} | {} | {} | {} | | |",
                result.name,
                rate(crate::load::per_second(hist.len(), result.elapsed)),
                q(hist, 0.5),
                q(hist, 0.9),
                q(hist, 0.99),
                q(hist, 0.999),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_about_three_significant_digits() {
        assert_eq!(ms(412), "0.412 ms");
        assert_eq!(ms(12_345), "12.35 ms");
        assert_eq!(ms(123_456), "123.5 ms");
        assert_eq!(ms(2_345_678), "2346 ms");
    }

    #[test]
    fn large_rates_are_grouped_by_thousands() {
        assert_eq!(rate(25_123.4), "25,123");
        assert_eq!(rate(1_000_000.0), "1,000,000");
        assert_eq!(rate(812.0), "812");
        assert_eq!(rate(81.26), "81.3");
    }
}
