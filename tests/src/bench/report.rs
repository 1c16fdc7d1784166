//! Medians, ratios and the printed report.

/// Median of `values` (0 for none).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A target on a ratio: lb / reference must be at least (or at most) `bound`.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl Target {
    pub fn verdict(self, ratio: f64) -> &'static str {
        if ratio == 0.0 || !ratio.is_finite() {
            return "no data";
        }
        match self {
            Target::AtLeast(b) if ratio >= b => "meets",
            Target::AtMost(b) if ratio <= b => "meets",
            Target::None => "",
            _ => "MISSES",
        }
    }

    pub fn describe(self) -> String {
        match self {
            Target::AtLeast(b) => format!(">= {b}x"),
            Target::AtMost(b) => format!("<= {b}x"),
            Target::None => "-".into(),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    pub lb: f64,
    pub reference: f64,
    pub reference_name: String,
    pub target: Target,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        if self.reference == 0.0 {
            0.0
        } else {
            self.lb / self.reference
        }
    }
}

/// Prints rows as an aligned table.
pub fn print(title: &str, rows: &[Row]) {
    println!("\n## {title}");
    println!(
        "{:<44} {:>14} {:>14} {:>10} {:>8} {:>8}  verdict",
        "metric", "lb", "reference", "ref", "ratio", "target"
    );
    for r in rows {
        println!(
            "{:<44} {:>14.1} {:>14.1} {:>10} {:>8.2} {:>8}  {}",
            format!("{} ({})", r.metric, r.unit),
            r.lb,
            r.reference,
            r.reference_name,
            r.ratio(),
            r.target.describe(),
            r.target.verdict(r.ratio())
        );
    }
}
