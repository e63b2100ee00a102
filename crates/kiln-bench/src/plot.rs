//! The replay as a picture (SVG, drawn with plotters): above, one row per
//! step and one column per build, green where the step was cached, orange
//! where it ran without need (the ideal was a hit), red where it had to
//! run; below, each build's time, with the `--no-cache` time beside it
//! when measured.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{BenchReport, Outcome};
use crate::BenchError;

const WIDTH: u32 = 1100;
const ROW: u32 = 26;
const TIMES_HEIGHT: u32 = 300;
const LABELS: u32 = 420;
const HIT: RGBColor = RGBColor(46, 160, 67);
const MISS: RGBColor = RGBColor(218, 54, 51);
const AVOIDABLE: RGBColor = RGBColor(240, 150, 30);
const CACHED_LINE: RGBColor = RGBColor(31, 111, 235);
const NO_CACHE_LINE: RGBColor = RGBColor(130, 130, 130);

/// Draws `report` into the SVG file `path`.
pub fn write_svg(report: &BenchReport, path: &Path) -> Result<(), BenchError> {
    draw(report, path).map_err(|e| BenchError::Plot(format!("{}: {e}", path.display())))
}

fn draw(report: &BenchReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let steps = report.steps.len().max(1);
    let builds = report.builds.len().max(1);
    let grid_height = 90 + ROW * steps as u32;
    let root = SVGBackend::new(path, (WIDTH, grid_height + TIMES_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (grid_area, times_area) = root.split_vertically(grid_height);

    let x_range = 0.5f64..builds as f64 + 0.5;
    let mut grid = ChartBuilder::on(&grid_area)
        .caption(
            format!(
                "{:.0}% of {} step builds cached (ideal {:.0}%): green cached, orange ran without need, red had to run",
                report.totals.hit_rate * 100.0,
                report.totals.steps,
                report.totals.ideal_hit_rate * 100.0
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(LABELS)
        .build_cartesian_2d(x_range.clone(), -0.5f64..steps as f64 - 0.5)?;
    grid.configure_mesh()
        .disable_mesh()
        .y_labels(0)
        .x_labels(builds.min(25))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("build")
        .draw()?;
    // The first step on top.
    let row_of = |step: usize| (steps - 1 - step) as f64;
    let cells = report.builds.iter().flat_map(|build| {
        build.steps.iter().filter_map(move |run| {
            let step = report.steps.iter().position(|s| s.step == run.step)?;
            let color = if run.outcome == Outcome::Hit {
                HIT
            } else if run.avoidable() {
                AVOIDABLE
            } else {
                MISS
            };
            Some((build.index as f64, row_of(step), color))
        })
    });
    grid.draw_series(cells.map(|(x, y, color)| {
        Rectangle::new([(x - 0.42, y - 0.38), (x + 0.42, y + 0.38)], color.filled())
    }))?;
    // Step names in the label area, each beside its row.
    let label_style = ("monospace", 13).into_font().color(&BLACK);
    for (i, step) in report.steps.iter().enumerate() {
        let (_, y) = grid.backend_coord(&(x_range.start, row_of(i)));
        let name = shorten(&step.step, 44);
        grid_area.draw(&Text::new(
            format!(
                "{name} {:>3.0}% (ideal {:.0}%)",
                step.hit_rate * 100.0,
                step.ideal_hit_rate * 100.0
            ),
            (16, y - 7),
            label_style.clone(),
        ))?;
    }

    let slowest = report
        .builds
        .iter()
        .map(|b| b.seconds.max(b.no_cache_seconds.unwrap_or(0.0)))
        .fold(0.0f64, f64::max)
        .max(0.01);
    let mut times = ChartBuilder::on(&times_area)
        .caption("Seconds per build", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range, 0f64..slowest * 1.15)?;
    times
        .configure_mesh()
        .x_labels(builds.min(25))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("build")
        .y_desc("seconds")
        .draw()?;
    let cached: Vec<(f64, f64)> = report
        .builds
        .iter()
        .map(|b| (b.index as f64, b.seconds))
        .collect();
    times
        .draw_series(LineSeries::new(cached.clone(), CACHED_LINE.stroke_width(2)))?
        .label("kiln, with its cache")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], CACHED_LINE.stroke_width(2)));
    times.draw_series(
        cached
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 3, CACHED_LINE.filled())),
    )?;
    let no_cache: Vec<(f64, f64)> = report
        .builds
        .iter()
        .filter_map(|b| Some((b.index as f64, b.no_cache_seconds?)))
        .collect();
    if !no_cache.is_empty() {
        times
            .draw_series(LineSeries::new(no_cache, NO_CACHE_LINE.stroke_width(2)))?
            .label("the same builds with --no-cache")
            .legend(|(x, y)| {
                PathElement::new([(x, y), (x + 18, y)], NO_CACHE_LINE.stroke_width(2))
            });
    }
    times
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return format!("{text:<width$}");
    }
    let kept: String = text.chars().take(width - 1).collect();
    format!("{kept}…")
}
