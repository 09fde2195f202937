//! The game day's HTML report: a summary table (pass/fail per SLO) and, per scenario, a
//! timeline of throughput, latency and errors with the fault window shaded. One self-contained
//! file (inline SVG, no script, no external asset).

use std::fmt::Write;

use crate::scenarios::ScenarioReport;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn seconds(ms_opt: Option<u64>) -> String {
    ms_opt.map_or("—".to_owned(), |ms| {
        format!("{:.1} s", ms as f64 / 1000.0)
    })
}

/// Returns the report of a run of `reports`, made at `commit` on `date`.
pub fn html(reports: &[ScenarioReport], commit: &str, date: &str) -> String {
    let mut page = String::new();
    let num_passed = reports.iter().filter(|report| report.pass).count();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>Bulwark game day {date}</title><style>{STYLE}</style></head><body>\
         <h1>Bulwark game day</h1><p>{date} · commit <code>{commit}</code> · \
         {num_passed} of {total} scenarios passed every SLO</p>",
        date = escape(date),
        commit = escape(commit),
        total = reports.len(),
    );
    page.push_str(
        "<table><thead><tr><th>scenario</th><th>transport</th><th>detect</th><th>recover</th>\
         <th>lost</th><th>duplicate executions</th><th>outcome conflicts</th><th>client errors</th>\
         <th>peak RSS</th><th>result</th></tr></thead><tbody>",
    );
    for report in reports {
        let measured = &report.measured;
        let errors: u64 = measured.client_errors.values().sum();
        let _ = write!(
            page,
            "<tr><td><a href=\"#{name}\">{name}</a></td><td>{transport:?}</td><td>{detect}</td>\
             <td>{recover}</td><td>{lost}</td><td>{dups}</td><td>{conflicts}</td><td>{errors}</td>\
             <td>{rss:.0} MiB</td><td class=\"{class}\">{result}</td></tr>",
            name = escape(&report.name),
            transport = report.transport,
            detect = seconds(measured.detect_ms),
            recover = seconds(measured.recover_ms),
            lost = measured.num_lost,
            dups = measured.num_duplicate_executions,
            conflicts = measured.num_outcome_conflicts,
            rss = measured.peak_rss_mib,
            class = if report.pass { "pass" } else { "fail" },
            result = if report.pass { "pass" } else { "FAIL" },
        );
    }
    page.push_str("</tbody></table>");
    for report in reports {
        scenario_section(&mut page, report);
    }
    page.push_str("</body></html>\n");
    page
}

fn scenario_section(page: &mut String, report: &ScenarioReport) {
    let _ = write!(
        page,
        "<section id=\"{name}\"><h2>{name}</h2><p>{description}</p>",
        name = escape(&report.name),
        description = escape(&report.description),
    );
    page.push_str(&chart(report));
    page.push_str("<table><thead><tr><th>SLO</th><th>target</th><th>actual</th><th>result</th></tr></thead><tbody>");
    for slo in &report.slos {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            escape(&slo.name),
            escape(&slo.target),
            escape(&slo.actual),
            if slo.pass { "pass" } else { "fail" },
            if slo.pass { "pass" } else { "FAIL" },
        );
    }
    page.push_str("</tbody></table>");
    let errors: Vec<String> = report
        .measured
        .client_errors
        .iter()
        .map(|(status, count)| format!("{count} × {status}"))
        .collect();
    let _ = write!(
        page,
        "<p>{accepted} jobs accepted · client errors: {errors} · peak CPU {cpu:.0}% of a core</p>",
        accepted = report.measured.num_accepted,
        errors = if errors.is_empty() {
            "none".to_owned()
        } else {
            escape(&errors.join(", "))
        },
        cpu = report.measured.peak_cpu_percent,
    );
    if !report.notes.is_empty() {
        page.push_str("<ul>");
        for note in &report.notes {
            let _ = write!(page, "<li>{}</li>", escape(note));
        }
        page.push_str("</ul>");
    }
    page.push_str("</section>");
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 50.0;
const TOP: f64 = 16.0;

/// Returns the timeline as an SVG: completions per second and p99 submission latency as lines,
/// client errors as bars, the fault window shaded.
fn chart(report: &ScenarioReport) -> String {
    let points = &report.measured.timeline;
    let num_seconds = points.len().max(2) as f64;
    let plot_width = WIDTH - LEFT - 10.0;
    let plot_height = HEIGHT - TOP - 30.0;
    let x = |second: f64| LEFT + second / (num_seconds - 1.0) * plot_width;
    let max_of = |value: &dyn Fn(&crate::measure::TimelinePoint) -> f64| {
        points.iter().map(value).fold(1.0_f64, f64::max)
    };
    let max_completions = max_of(&|point| point.completions as f64);
    let max_latency = max_of(&|point| point.p99_latency_ms);
    let max_errors = max_of(&|point| point.errors as f64);
    let y = |value: f64, max: f64| TOP + plot_height - value / max * plot_height;
    let line = |value: &dyn Fn(&crate::measure::TimelinePoint) -> f64, max: f64| {
        points
            .iter()
            .map(|point| format!("{:.1},{:.1}", x(point.t_s as f64), y(value(point), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"timeline of {name}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\">",
        name = escape(&report.name)
    );
    let fault_x0 = x(report.fault_start_ms as f64 / 1000.0);
    let fault_x1 = x(report.fault_end_ms as f64 / 1000.0).max(fault_x0 + 2.0);
    let _ = write!(
        svg,
        "<rect x=\"{fault_x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_height:.1}\" fill=\"#f6d5d5\"><title>fault</title></rect>",
        fault_x1 - fault_x0
    );
    for point in points.iter().filter(|point| point.errors > 0) {
        let bar_height = point.errors as f64 / max_errors * plot_height * 0.5;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"{bar_height:.1}\" fill=\"#c0392b\"><title>{} errors at {} s</title></rect>",
            x(point.t_s as f64) - 1.5,
            TOP + plot_height - bar_height,
            point.errors,
            point.t_s
        );
    }
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#2c7be5\" stroke-width=\"1.5\" points=\"{}\"/>",
        line(&|point| point.completions as f64, max_completions)
    );
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#e58e26\" stroke-width=\"1.5\" points=\"{}\"/>",
        line(&|point| point.p99_latency_ms, max_latency)
    );
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{base:.1}\" x2=\"{right:.1}\" y2=\"{base:.1}\" stroke=\"#555\"/>\
         <text x=\"{LEFT}\" y=\"{label:.1}\" font-size=\"11\">0 s</text>\
         <text x=\"{right:.1}\" y=\"{label:.1}\" font-size=\"11\" text-anchor=\"end\">{last} s</text>\
         <text x=\"4\" y=\"{TOP}\" font-size=\"11\" fill=\"#2c7be5\">{max_completions:.0}/s</text>\
         <text x=\"4\" y=\"{latency_y:.1}\" font-size=\"11\" fill=\"#e58e26\">{max_latency:.0} ms</text>\
         <text x=\"{legend_x:.1}\" y=\"{label:.1}\" font-size=\"11\">blue: jobs finished/s · orange: p99 submit latency · red: client errors · shaded: fault</text></svg>",
        base = TOP + plot_height,
        right = LEFT + plot_width,
        label = TOP + plot_height + 16.0,
        last = points.len().saturating_sub(1),
        latency_y = TOP + 14.0,
        legend_x = LEFT + 60.0,
    );
    svg
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:900px;color:#222}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
.pass{color:#17703a;font-weight:600}.fail{color:#b00020;font-weight:700}section{margin-top:2rem}";
