//! The results of a run (JSON lines) as Markdown tables: medians, min–max over rounds,
//! and the ratio subject ÷ baseline, next to the machine's limits.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::record::{Record, MACHINE};
use crate::workloads::{metric_of, Metric, MACHINE_WORKLOADS, REGISTRY_WORKLOADS};

type Pick = fn(&Record) -> Option<f64>;

fn mbps(r: &Record) -> Option<f64> {
    Some(r.mb_per_s)
}
fn opss(r: &Record) -> Option<f64> {
    Some(r.ops_per_s)
}
fn p50(r: &Record) -> Option<f64> {
    Some(r.p50_ms)
}
fn p99(r: &Record) -> Option<f64> {
    Some(r.p99_ms)
}
fn rss_peak_mib(r: &Record) -> Option<f64> {
    r.rss_peak_kib.map(|k| k as f64 / 1024.0)
}
fn rss_mib(r: &Record) -> Option<f64> {
    r.rss_kib.map(|k| k as f64 / 1024.0)
}
fn rss_anon_mib(r: &Record) -> Option<f64> {
    r.rss_anon_kib.map(|k| k as f64 / 1024.0)
}
fn startup_ms(r: &Record) -> Option<f64> {
    Some(r.seconds * 1000.0)
}
/// Server CPU seconds per GB moved, or milliseconds per operation.
fn cpu_per_unit(r: &Record) -> Option<f64> {
    let cpu = r.server_cpu_s?;
    match metric_of(&r.workload) {
        Metric::MbPerS if r.bytes > 0 => Some(cpu / (r.bytes as f64 / 1e9)),
        Metric::OpsPerS if r.ops > 0 => Some(cpu * 1000.0 / r.ops as f64),
        _ => None,
    }
}

struct Data<'a> {
    records: &'a [Record],
}

impl Data<'_> {
    /// Round -> value, over the successful records of (workload, registry).
    fn values(&self, workload: &str, registry: &str, pick: Pick) -> BTreeMap<u32, f64> {
        self.records
            .iter()
            .filter(|r| r.workload == workload && r.registry == registry && r.errors == 0)
            .filter_map(|r| Some((r.round, pick(r)?)))
            .collect()
    }

    fn summary(&self, workload: &str, registry: &str, pick: Pick) -> Option<Summary> {
        Summary::of(
            self.values(workload, registry, pick)
                .into_values()
                .collect(),
        )
    }

    fn median(&self, workload: &str, registry: &str, pick: Pick) -> Option<f64> {
        self.summary(workload, registry, pick).map(|s| s.median)
    }

    /// Ratio of medians, and min–max of the ratios of the same round.
    fn ratio(
        &self,
        workload: &str,
        a: &str,
        b: &str,
        pick: Pick,
    ) -> Option<(f64, Option<(f64, f64)>)> {
        let (sa, sb) = (
            self.summary(workload, a, pick)?,
            self.summary(workload, b, pick)?,
        );
        if sb.median == 0.0 {
            return None;
        }
        let (va, vb) = (
            self.values(workload, a, pick),
            self.values(workload, b, pick),
        );
        let paired: Vec<f64> = va
            .iter()
            .filter_map(|(r, x)| vb.get(r).filter(|y| **y != 0.0).map(|y| x / y))
            .collect();
        let range = Summary::of(paired).map(|s| (s.min, s.max));
        Some((sa.median / sb.median, range))
    }

    fn workloads(&self) -> Vec<String> {
        let mut names: Vec<String> = REGISTRY_WORKLOADS.iter().map(|s| s.to_string()).collect();
        for r in self.records {
            if r.registry != MACHINE
                && r.workload != "startup"
                && !r.workload.starts_with("seed-")
                && !names.contains(&r.workload)
            {
                names.push(r.workload.clone());
            }
        }
        names.retain(|w| self.records.iter().any(|r| &r.workload == w));
        names
    }
}

#[derive(Clone, Copy)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(mut v: Vec<f64>) -> Option<Summary> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    fn show(&self) -> String {
        if self.min == self.max {
            num(self.median)
        } else {
            format!("{} ({}–{})", num(self.median), num(self.min), num(self.max))
        }
    }
}

/// Three significant digits or so, without exponent.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A ratio; below 0.01 as a fraction (`1/2000`), which stays readable.
pub fn ratio_num(x: f64) -> String {
    if x > 0.0 && x < 0.01 {
        format!("1/{}", num(1.0 / x))
    } else {
        num(x)
    }
}

fn show(s: Option<Summary>) -> String {
    s.map(|s| s.show()).unwrap_or_else(|| "–".into())
}

/// Ratio of the medians, and the min–max of the per-round ratios.
type Ratio = (f64, Option<(f64, f64)>);

/// One line of the comparison: a metric of a workload, one registry against the baseline.
pub struct Line {
    pub workload: String,
    /// `MB/s`, `ops/s`, `p50 ms`, ...
    pub metric: &'static str,
    /// The registry compared with the baseline: the subject, or another one measured on
    /// that workload (e.g. `berth-auth`).
    pub subject: String,
    /// Throughput: higher is better; latency, time and memory: lower is better.
    pub higher_better: bool,
    subj: Option<Summary>,
    base: Option<Summary>,
    /// subject ÷ baseline.
    pub ratio: Option<Ratio>,
}

impl Line {
    /// How many times better the subject is than the baseline on this line (above 1: the
    /// subject wins), with the per-round range: the ratio, inverted for lower-is-better
    /// lines. `None` without a positive finite ratio.
    pub fn advantage(&self) -> Option<Ratio> {
        let (x, range) = self.ratio?;
        let (x, range) = if self.higher_better {
            (x, range)
        } else {
            (1.0 / x, range.map(|(a, b)| (1.0 / b, 1.0 / a)))
        };
        let ok = |v: f64| v.is_finite() && v > 0.0;
        ok(x).then_some((x, range.filter(|(a, b)| ok(*a) && ok(*b))))
    }

    pub fn subject_median(&self) -> Option<f64> {
        self.subj.map(|s| s.median)
    }

    pub fn baseline_median(&self) -> Option<f64> {
        self.base.map(|s| s.median)
    }

    fn ratio_cell(&self) -> String {
        match self.ratio {
            None => "–".into(),
            Some((x, range)) => format!("{}×{}", ratio_num(x), range_text(range)),
        }
    }

    /// Who wins on this line: the subject's name, the baseline's, or "≈ even".
    fn better(&self, baseline: &str) -> String {
        match self.advantage() {
            None => "–".into(),
            Some((good, _)) if (good - 1.0).abs() < 0.03 => "≈ even".into(),
            Some((good, _)) if good > 1.0 => self.subject.clone(),
            Some(_) => baseline.into(),
        }
    }
}

/// ` (a–b)` for a range of ratios, empty for none or a single value.
pub fn range_text(range: Option<(f64, f64)>) -> String {
    range
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!(" ({}–{})", ratio_num(a), ratio_num(b)))
        .unwrap_or_default()
}

/// Every comparison line of the results, in the report's order: per workload, its
/// metrics for the subject and then for each other registry measured on it (e.g.
/// `berth-auth`), then start-up (workload `startup`).
pub fn lines(records: &[Record], subject: &str, baseline: &str) -> Vec<Line> {
    let d = Data { records };
    let mut out = Vec::new();
    let line = |wl: &str, metric, subj: &str, pick: Pick, higher_better| Line {
        workload: wl.to_string(),
        metric,
        subject: subj.to_string(),
        higher_better,
        subj: d.summary(wl, subj, pick),
        base: d.summary(wl, baseline, pick),
        ratio: d.ratio(wl, subj, baseline, pick),
    };
    for wl in d.workloads() {
        let rows: Vec<(&'static str, Pick, bool)> = match metric_of(&wl) {
            Metric::MbPerS => vec![("MB/s", mbps, true)],
            Metric::OpsPerS => vec![
                ("ops/s", opss, true),
                ("p50 ms", p50, false),
                ("p99 ms", p99, false),
            ],
        };
        let mut subjects = vec![subject.to_string()];
        for r in records {
            if r.workload == wl
                && r.registry != subject
                && r.registry != baseline
                && r.registry != MACHINE
                && !subjects.contains(&r.registry)
            {
                subjects.push(r.registry.clone());
            }
        }
        for subj in &subjects {
            for (metric, pick, higher) in &rows {
                out.push(line(&wl, metric, subj, *pick, *higher));
            }
        }
    }
    if records.iter().any(|r| r.workload == "startup") {
        out.push(line(
            "startup",
            "start to first /v2/ answer, ms",
            subject,
            startup_ms,
            false,
        ));
        out.push(line("startup", "idle RSS, MiB", subject, rss_mib, false));
        out.push(line(
            "startup",
            "idle private memory (RssAnon), MiB",
            subject,
            rss_anon_mib,
            false,
        ));
    }
    out
}

/// The whole report. `subject` is compared to `baseline` (ratio subject ÷ baseline).
pub fn render(records: &[Record], subject: &str, baseline: &str) -> String {
    let d = Data { records };
    let mut o = String::new();
    let w = &mut o;

    let _ = writeln!(w, "### Machine limits (same harness, same run)\n");
    let _ = writeln!(w, "| limit | median (min–max) | unit |");
    let _ = writeln!(w, "|---|---|---|");
    let limit_names = [
        (
            "sha256",
            "SHA-256, one core, Rust `sha2` crate (what Berth uses)",
        ),
        (
            "sha256-openssl",
            "SHA-256, one core, `openssl speed -evp sha256`",
        ),
        (
            "disk-write",
            "sequential write, written back on the way, + fsync, same disk",
        ),
        ("loopback-get", "HTTP/1.1 GET over loopback, trivial server"),
        ("loopback-put", "HTTP/1.1 PUT over loopback, trivial server"),
    ];
    for (name, what) in limit_names {
        if let Some(s) = d.summary(name, MACHINE, mbps) {
            let _ = writeln!(w, "| {what} | {} | MB/s |", s.show());
        }
    }
    if let Some(s) = d.summary("fsync-4k", MACHINE, opss) {
        let _ = writeln!(
            w,
            "| 4 KiB write + fdatasync, one thread (median p99: {} ms) | {} | ops/s |",
            d.median("fsync-4k", MACHINE, p99)
                .map(num)
                .unwrap_or_else(|| "–".into()),
            s.show()
        );
    }

    let _ = writeln!(
        w,
        "\n### {subject} vs {baseline}\n\nMedian over rounds (min–max). Ratio = {subject} ÷ {baseline} \
         of the medians, with the range of the per-round ratios; \"better\" says who wins on \
         that line (throughput: higher is better; latency: lower is better).\n"
    );
    let _ = writeln!(
        w,
        "| workload | metric | {subject} | {baseline} | ratio {subject}/{baseline} | better |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    let (comparison, startup): (Vec<Line>, Vec<Line>) = lines(records, subject, baseline)
        .into_iter()
        .partition(|l| l.workload != "startup");
    for l in &comparison {
        let label = if l.subject == subject {
            l.metric.to_string()
        } else {
            format!("{} [{}]", l.metric, l.subject)
        };
        let _ = writeln!(
            w,
            "| {} | {label} | {} | {} | {} | {} |",
            l.workload,
            show(l.subj),
            show(l.base),
            l.ratio_cell(),
            l.better(baseline),
        );
    }

    let _ = writeln!(
        w,
        "\n### Server resources during each workload (medians)\n\n\
         Peak RSS: the server's VmHWM, reset when the workload starts. CPU: user + system \
         time of the server process, per GB moved (throughput lines) or per operation in ms \
         (request lines).\n"
    );
    let _ = writeln!(
        w,
        "| workload | {subject} peak RSS MiB | {baseline} peak RSS MiB | {subject} CPU | {baseline} CPU | unit |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for wl in d.workloads() {
        let unit = match metric_of(&wl) {
            Metric::MbPerS => "CPU s/GB",
            Metric::OpsPerS => "CPU ms/op",
        };
        let f = |reg: &str, pick: Pick| {
            d.median(&wl, reg, pick)
                .map(num)
                .unwrap_or_else(|| "–".into())
        };
        let _ = writeln!(
            w,
            "| {wl} | {} | {} | {} | {} | {unit} |",
            f(subject, rss_peak_mib),
            f(baseline, rss_peak_mib),
            f(subject, cpu_per_unit),
            f(baseline, cpu_per_unit),
        );
    }

    let seeds: Vec<&Record> = records
        .iter()
        .filter(|r| r.workload.starts_with("seed-"))
        .collect();
    if !seeds.is_empty() {
        let _ = writeln!(
            w,
            "\n### Seeding for the listings (once per registry, through the API)\n"
        );
        let _ = writeln!(
            w,
            "| step | registry | conns | ops/s | p50 ms | p99 ms | seconds | errors |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
        for r in seeds {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.workload,
                r.registry,
                r.conns,
                num(r.ops_per_s),
                num(r.p50_ms),
                num(r.p99_ms),
                num(r.seconds),
                r.errors
            );
        }
    }

    if !startup.is_empty() {
        let _ = writeln!(
            w,
            "\n### Start-up (existing data directory) and idle memory\n"
        );
        let _ = writeln!(
            w,
            "| metric | {subject} | {baseline} | ratio {subject}/{baseline} | better |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|");
        for l in &startup {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} |",
                l.metric,
                show(l.subj),
                show(l.base),
                l.ratio_cell(),
                l.better(baseline),
            );
        }
    }

    targets(&d, w, subject, baseline);

    let failed: Vec<&Record> = records.iter().filter(|r| r.errors > 0).collect();
    if !failed.is_empty() {
        let _ = writeln!(w, "\n### Errors\n");
        for r in failed {
            let _ = writeln!(
                w,
                "- round {} {} on {}: {} error(s){}",
                r.round,
                r.workload,
                r.registry,
                r.errors,
                r.note
                    .as_deref()
                    .map(|n| format!(" — {n}"))
                    .unwrap_or_default()
            );
        }
    }
    // Notes: once per workload when every registry's is the same.
    let mut notes: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.errors == 0) {
        if let Some(n) = &r.note {
            notes.entry(&r.workload).or_default().insert(&r.registry, n);
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(w, "\n### How each line was made\n");
        for (wl, by_reg) in notes {
            let mut distinct: Vec<&str> = by_reg.values().copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() == 1 {
                let _ = writeln!(w, "- {wl}: {}", distinct[0]);
            } else {
                let each: Vec<String> = by_reg.iter().map(|(r, n)| format!("{r}: {n}")).collect();
                let _ = writeln!(w, "- {wl}: {}", each.join("; "));
            }
        }
    }
    o
}

/// The targets of issue 8, checked against this run.
fn targets(d: &Data, w: &mut String, s: &str, b: &str) {
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let limit = match (
        d.median("sha256-openssl", MACHINE, mbps),
        d.median("disk-write", MACHINE, mbps),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for wl in ["push-mono", "push-chunked"] {
        if let (Some(l), Some(v)) = (limit, d.median(wl, s, mbps)) {
            let pct = v / l * 100.0;
            rows.push((
                format!(
                    "{wl} ≥ 90 % of min(sha256-openssl, disk-write) = {} MB/s",
                    num(l)
                ),
                format!("{} MB/s = {:.0} %", num(v), pct),
                verdict(pct >= 90.0),
            ));
        }
    }
    let mut ratio = |wl: &str, subj: &str, pick: Pick, want: f64, what: &str| {
        if let Some((x, _)) = d.ratio(wl, subj, b, pick) {
            rows.push((
                format!("{wl} {what} ≥ {want}× {b}"),
                format!("{}×", num(x)),
                verdict(x >= want),
            ));
        }
    };
    ratio("pull", s, mbps, 1.5, "MB/s");
    for wl in ["small-push-c8", "small-push-c64"] {
        ratio(wl, s, opss, 10.0, "blobs/s");
    }
    for wl in ["skopeo-push", "skopeo-pull"] {
        ratio(wl, s, mbps, 2.0, "MB/s");
    }
    // The manifest target is with Berth's auth on: the `<subject>-auth` target.
    let auth = format!("{s}-auth");
    let (ms, what) = if d.records.iter().any(|r| r.registry == auth) {
        (auth.as_str(), "req/s, auth on (bearer), vs no auth:")
    } else {
        (s, "req/s, auth OFF (no auth target in this run):")
    };
    for wl in ["manifest-tag-c64", "manifest-digest-c64"] {
        ratio(wl, ms, opss, 20.0, what);
    }
    let mut below = |wl: &str, subj: &str, pick: Pick, max: f64, what: &str, unit: &str| {
        if let Some(v) = d.median(wl, subj, pick) {
            rows.push((
                format!("{wl}: {what} < {} {unit}", num(max)),
                format!("{} {unit}", num(v)),
                verdict(v < max),
            ));
        }
    };
    for wl in ["manifest-tag-c64", "manifest-digest-c64"] {
        below(wl, ms, p99, 5.0, &format!("p99 ({ms})"), "ms");
    }
    below("push-mono", s, rss_peak_mib, 64.0, "peak RSS", "MiB");
    below("push-chunked", s, rss_peak_mib, 64.0, "peak RSS", "MiB");
    below("startup", s, rss_mib, 12.0, "idle RSS", "MiB");
    below(
        "startup",
        s,
        startup_ms,
        10.0,
        "start to first answer",
        "ms",
    );
    for wl in ["catalog-first", "catalog-deep", "tags-first", "tags-deep"] {
        below(wl, s, p99, 20.0, "p99", "ms");
    }
    // Issue 7: no page takes more than a fraction of a second with 10,000 repositories.
    for wl in [
        "ui-images-first",
        "ui-images-deep",
        "ui-search",
        "ui-registry",
        "ui-repository",
    ] {
        below(wl, s, p99, 250.0, "p99", "ms");
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n### Targets of issue 8 ({s})\n");
    let _ = writeln!(w, "| target | this run | |");
    let _ = writeln!(w, "|---|---|---|");
    for (t, v, ok) in rows {
        let _ = writeln!(w, "| {t} | {v} | {ok} |");
    }
}

/// Workload names known to the report, for `--help`.
pub fn known() -> String {
    MACHINE_WORKLOADS
        .iter()
        .chain(REGISTRY_WORKLOADS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(w: &str, reg: &str, round: u32, mbps: f64) -> Record {
        Record {
            workload: w.into(),
            registry: reg.into(),
            round,
            mb_per_s: mbps,
            ..Default::default()
        }
    }

    #[test]
    fn ratios_are_of_medians_with_paired_ranges() {
        let rs = vec![
            rec("pull", "a", 1, 100.0),
            rec("pull", "a", 2, 300.0),
            rec("pull", "a", 3, 200.0),
            rec("pull", "b", 1, 100.0),
            rec("pull", "b", 2, 100.0),
            rec("pull", "b", 3, 100.0),
        ];
        let d = Data { records: &rs };
        let (x, range) = d.ratio("pull", "a", "b", mbps).unwrap();
        assert_eq!(x, 2.0);
        assert_eq!(range, Some((1.0, 3.0)));
        let text = render(&rs, "a", "b");
        assert!(text.contains("| pull | MB/s | 200 (100–300) | 100 | 2.00× (1.00–3.00) | a |"));
        assert_eq!(ratio_num(0.0005), "1/2000");
        assert_eq!(ratio_num(0.5), "0.500");
    }
}
