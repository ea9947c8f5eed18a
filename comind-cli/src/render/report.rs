//! Human renderings of a finished run: the summary table with the critical path, a
//! plan's changes, health, what `down` kept, and errors.

use std::fmt::Write as _;

use comind_core::engine::RunReport;
use comind_core::event::{Outcome, RunOutcome};
use comind_core::{Action, Error, ErrorKind, Health, Operation};

use super::progress::seconds;

/// Renders rows as left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The per-phase summary, the critical path and what went wrong.
pub fn summary(report: &RunReport) -> String {
    let s = &report.summary;
    let rows: Vec<Vec<String>> = s
        .phases
        .iter()
        .map(|p| {
            let changes = if p.outcome == Outcome::Succeeded {
                p.changes.to_string()
            } else {
                "-".to_string()
            };
            let attempts = if p.attempts > 1 {
                format!(" ({} attempts)", p.attempts)
            } else {
                String::new()
            };
            vec![
                p.id.to_string(),
                format!("{}{attempts}", p.outcome),
                seconds(p.duration_ms),
                changes,
            ]
        })
        .collect();
    let mut out = table(&["PHASE", "OUTCOME", "DURATION", "CHANGES"], &rows);
    let path: Vec<&str> = s.critical_path.iter().map(|id| id.as_str()).collect();
    let verb = match s.operation {
        Operation::Plan => "pending",
        _ => "made",
    };
    let _ = writeln!(
        out,
        "\nwall {} · critical path {} ({}) · {} change(s) {verb}",
        seconds(s.wall_ms),
        if path.is_empty() {
            "-".to_string()
        } else {
            path.join(" → ")
        },
        seconds(s.critical_path_ms),
        s.changes
    );
    let failed: Vec<_> = s
        .phases
        .iter()
        .filter(|p| p.outcome == Outcome::Failed)
        .collect();
    for phase in &failed {
        if let Some(error) = &phase.error {
            let _ = writeln!(out, "\nerror: phase `{}` failed: {error}", phase.id);
        }
    }
    let skipped: Vec<_> = s
        .phases
        .iter()
        .filter(|p| matches!(p.outcome, Outcome::Skipped | Outcome::Cancelled))
        .filter_map(|p| p.reason.as_ref().map(|r| format!("  {}: {r}", p.id)))
        .collect();
    if !skipped.is_empty() && s.outcome != RunOutcome::Succeeded {
        let _ = writeln!(out, "\nnot run:\n{}", skipped.join("\n"));
    }
    match s.outcome {
        RunOutcome::Rejected => {
            let _ = writeln!(
                out,
                "\nnothing was changed: fix the problems above and run again"
            );
        }
        RunOutcome::Cancelled => {
            let _ = writeln!(
                out,
                "\ncancelled: run `comind up` again to resume from what exists"
            );
        }
        _ => {}
    }
    out
}

fn symbol(action: Action) -> &'static str {
    match action {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
    }
}

/// The changes of the phases whose plan could be read, for a plan that failed
/// elsewhere; empty when there are none.
pub fn plan_of_read_phases(report: &RunReport) -> String {
    let text = plan(report);
    if text.starts_with("No changes") {
        String::new()
    } else {
        text
    }
}

/// A plan: each phase's pending changes, then the totals.
pub fn plan(report: &RunReport) -> String {
    let mut out = String::new();
    let mut counts = [0usize; 4];
    let mut deferred = 0;
    for phase in &report.summary.phases {
        let Some(plan) = report.plans.get(&phase.id) else {
            continue;
        };
        if plan.changes.is_empty() && plan.deferred.is_none() {
            continue;
        }
        let _ = writeln!(out, "{}:", phase.id);
        for change in &plan.changes {
            counts[match change.action {
                Action::Create => 0,
                Action::Update => 1,
                Action::Replace => 2,
                Action::Delete => 3,
            }] += 1;
            let _ = writeln!(out, "  {:>3} {change}", symbol(change.action));
        }
        if let Some(reason) = &plan.deferred {
            deferred += 1;
            let _ = writeln!(out, "      (more may follow: {reason})");
        }
    }
    if counts.iter().sum::<usize>() == 0 && deferred == 0 {
        out.push_str("No changes: the environment matches the configuration.\n");
    } else {
        let _ = writeln!(
            out,
            "\nPlan: {} to create, {} to update, {} to replace, {} to delete.",
            counts[0], counts[1], counts[2], counts[3]
        );
    }
    out
}

/// Health per phase.
pub fn status(report: &RunReport) -> String {
    let rows: Vec<Vec<String>> = report
        .summary
        .phases
        .iter()
        .map(|p| match report.statuses.get(&p.id) {
            Some(status) => vec![
                p.id.to_string(),
                health(status.health).to_string(),
                status.detail.clone(),
            ],
            None => vec![
                p.id.to_string(),
                "unknown".to_string(),
                p.error
                    .as_ref()
                    .map(|e| e.to_string())
                    .or_else(|| p.reason.clone())
                    .unwrap_or_default(),
            ],
        })
        .collect();
    table(&["PHASE", "HEALTH", "DETAIL"], &rows)
}

fn health(h: Health) -> &'static str {
    match h {
        Health::Ready => "ready",
        Health::Degraded => "degraded",
        Health::Absent => "absent",
        Health::Unknown => "unknown",
    }
}

/// What `down` deliberately kept.
pub fn kept(report: &RunReport) -> String {
    let mut out = String::new();
    for phase in &report.summary.phases {
        if let Some(destroyed) = report.destroyed.get(&phase.id) {
            for item in &destroyed.kept {
                let _ = writeln!(out, "  {} {}: {}", item.kind, item.name, item.reason);
            }
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("\nkept:\n{out}")
    }
}

/// An error that stopped a command before or outside a run.
pub fn error(err: &Error) -> String {
    let mut out = String::new();
    let lead = match err.kind() {
        ErrorKind::InvalidInput => "error",
        ErrorKind::Conflict => "error (conflict)",
        _ => "error",
    };
    let _ = write!(out, "{lead}: ");
    if let Some(resource) = err.resource() {
        let _ = write!(out, "{resource}: ");
    }
    out.push_str(err.message());
    if let Some(source) = std::error::Error::source(err) {
        let _ = write!(out, ": {source}");
    }
    if let Some(hint) = err.hint() {
        let _ = write!(out, "\n  hint: {hint}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["PHASE", "OUTCOME"],
            &[
                vec!["network".into(), "succeeded".into()],
                vec!["object-store".into(), "failed".into()],
            ],
        );
        assert_eq!(
            text,
            "PHASE         OUTCOME\nnetwork       succeeded\nobject-store  failed\n"
        );
    }
}
