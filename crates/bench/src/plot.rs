//! The scaling plot: line charts drawn into an indexed-colour bitmap and encoded as PNG. Each panel
//! puts its points at equal distances along x (the values double or more from one to the next) and
//! starts y at zero. Labels use a built-in 5×7 font (capitals, digits and a few signs).

use std::{fs::File, io::BufWriter, path::Path};

use crate::Result;

/// The palette: background, ink, grid, and one colour per series.
const PALETTE: [[u8; 3]; 5] = [
    [255, 255, 255],
    [30, 30, 30],
    [225, 225, 225],
    [31, 119, 180],
    [255, 127, 14],
];
const BACKGROUND: u8 = 0;
const INK: u8 = 1;
const GRID: u8 = 2;
/// The colour of the first series; the next ones follow.
const SERIES: u8 = 3;

const PANEL_WIDTH: usize = 620;
const HEIGHT: usize = 420;
/// Margins of the plotting area within a panel.
const LEFT: usize = 90;
const RIGHT: usize = 30;
const TOP: usize = 72;
const BOTTOM: usize = 70;
/// Glyphs are drawn at twice their size.
const SCALE: usize = 2;

/// One line: a name for the legend and a y value per x label.
pub(crate) struct Series {
    /// Legend text.
    pub name: String,
    /// One value per x label.
    pub values: Vec<f64>,
}

/// One chart.
pub(crate) struct Panel {
    /// Title above the chart.
    pub title: String,
    /// Label of each point along x.
    pub x_labels: Vec<String>,
    /// What x is.
    pub x_title: String,
    /// What y is (its unit).
    pub y_title: String,
    /// The lines, at most two.
    pub series: Vec<Series>,
}

/// Draws the panels side by side and writes them to `path` as a PNG.
pub(crate) fn write(path: &Path, panels: &[Panel]) -> Result<()> {
    let mut canvas = Canvas::new(PANEL_WIDTH * panels.len(), HEIGHT);
    for (i, panel) in panels.iter().enumerate() {
        canvas.panel(i * PANEL_WIDTH, panel);
    }
    let file = BufWriter::new(File::create(path)?);
    let mut encoder = png::Encoder::new(file, canvas.width as u32, canvas.height as u32);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(PALETTE.concat());
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&canvas.pixels)?;
    writer.finish()?;
    Ok(())
}

struct Canvas {
    width: usize,
    height: usize,
    /// Palette indexes, row by row.
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![BACKGROUND; width * height],
        }
    }

    fn set(&mut self, x: i64, y: i64, colour: u8) {
        if (0..self.width as i64).contains(&x) && (0..self.height as i64).contains(&y) {
            self.pixels[y as usize * self.width + x as usize] = colour;
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, colour: u8) {
        for dy in 0..h {
            for dx in 0..w {
                self.set(x + dx, y + dy, colour);
            }
        }
    }

    /// A line `thickness` pixels wide (Bresenham, with a square pen).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: u8, thickness: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(
                x - thickness / 2,
                y - thickness / 2,
                thickness,
                thickness,
                colour,
            );
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text with its top-left corner at (x, y); unknown characters are left blank.
    fn text(&mut self, x: i64, y: i64, text: &str, colour: u8) {
        for (i, c) in text.chars().enumerate() {
            let Some(rows) = glyph(c.to_ascii_uppercase()) else {
                continue;
            };
            let left = x + (i * 6 * SCALE) as i64;
            for (row, bits) in rows.iter().enumerate() {
                for (col, bit) in bits.bytes().enumerate() {
                    if bit == b'#' {
                        let (px, py) = (left + (col * SCALE) as i64, y + (row * SCALE) as i64);
                        self.rect(px, py, SCALE as i64, SCALE as i64, colour);
                    }
                }
            }
        }
    }

    fn panel(&mut self, left: usize, panel: &Panel) {
        let (x0, x1) = ((left + LEFT) as i64, (left + PANEL_WIDTH - RIGHT) as i64);
        let (y0, y1) = (TOP as i64, (HEIGHT - BOTTOM) as i64);
        let max = panel
            .series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max);
        let (step, ticks) = nice_ticks(max);
        let top = step * ticks as f64;
        let y_of = |value: f64| y1 - ((value / top) * (y1 - y0) as f64).round() as i64;
        let points = panel.x_labels.len().max(1);
        let x_of = |i: usize| {
            let inner = (x1 - x0) as f64 - 40.0;
            x0 + 20 + (inner * i as f64 / (points - 1).max(1) as f64).round() as i64
        };

        self.text(left as i64 + 20, 14, &panel.title, INK);
        for tick in 0..=ticks {
            let value = step * tick as f64;
            let y = y_of(value);
            if tick > 0 {
                self.line((x0, y), (x1, y), GRID, 1);
            }
            let label = short(value);
            let width = (label.len() * 6 * SCALE) as i64;
            self.text(x0 - 8 - width, y - 7, &label, INK);
        }
        self.line((x0, y0), (x0, y1), INK, 2);
        self.line((x0, y1), (x1, y1), INK, 2);
        for (i, label) in panel.x_labels.iter().enumerate() {
            let x = x_of(i);
            self.line((x, y1), (x, y1 + 6), INK, 2);
            let width = (label.len() * 6 * SCALE) as i64;
            self.text(x - width / 2, y1 + 12, label, INK);
        }
        let x_title_width = (panel.x_title.len() * 6 * SCALE) as i64;
        self.text(
            (x0 + x1) / 2 - x_title_width / 2,
            y1 + 40,
            &panel.x_title,
            INK,
        );
        self.text(left as i64 + 20, TOP as i64 - 24, &panel.y_title, INK);

        for (n, series) in panel.series.iter().enumerate() {
            let colour = SERIES + n as u8;
            let points: Vec<(i64, i64)> = series
                .values
                .iter()
                .enumerate()
                .map(|(i, &v)| (x_of(i), y_of(v)))
                .collect();
            for pair in points.windows(2) {
                self.line(pair[0], pair[1], colour, 3);
            }
            for &(x, y) in &points {
                self.rect(x - 4, y - 4, 9, 9, colour);
            }
            // The legend, top right, one entry per series.
            let ly = TOP as i64 + 8 + 22 * n as i64;
            let lx = x0 + 16;
            self.rect(lx, ly + 2, 24, 8, colour);
            self.text(lx + 32, ly, &series.name, INK);
        }
    }
}

/// A step of 1, 2 or 5 times a power of ten, and how many steps reach past `max`.
fn nice_ticks(max: f64) -> (f64, usize) {
    if max <= 0.0 {
        return (1.0, 1);
    }
    let rough = max / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * power);
    (step, (max / step).ceil().max(1.0) as usize)
}

/// A short axis label: 1500 is `1.5K`, 2000000 is `2M`.
fn short(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "K")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.1}");
    let text = text.trim_end_matches(".0");
    format!("{text}{suffix}")
}

/// The 5×7 glyph of `c`, a row per string, `#` for ink.
fn glyph(c: char) -> Option<[&'static str; 7]> {
    Some(match c {
        'A' => [
            ".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#",
        ],
        'B' => [
            "####.", "#...#", "#...#", "####.", "#...#", "#...#", "####.",
        ],
        'C' => [
            ".###.", "#...#", "#....", "#....", "#....", "#...#", ".###.",
        ],
        'D' => [
            "####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####.",
        ],
        'E' => [
            "#####", "#....", "#....", "####.", "#....", "#....", "#####",
        ],
        'F' => [
            "#####", "#....", "#....", "####.", "#....", "#....", "#....",
        ],
        'G' => [
            ".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####",
        ],
        'H' => [
            "#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#",
        ],
        'I' => [
            ".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        'J' => [
            "..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##..",
        ],
        'K' => [
            "#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#",
        ],
        'L' => [
            "#....", "#....", "#....", "#....", "#....", "#....", "#####",
        ],
        'M' => [
            "#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#",
        ],
        'N' => [
            "#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#",
        ],
        'O' => [
            ".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###.",
        ],
        'P' => [
            "####.", "#...#", "#...#", "####.", "#....", "#....", "#....",
        ],
        'Q' => [
            ".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#",
        ],
        'R' => [
            "####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#",
        ],
        'S' => [
            ".####", "#....", "#....", ".###.", "....#", "....#", "####.",
        ],
        'T' => [
            "#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#..",
        ],
        'U' => [
            "#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###.",
        ],
        'V' => [
            "#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#..",
        ],
        'W' => [
            "#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#.",
        ],
        'X' => [
            "#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#",
        ],
        'Y' => [
            "#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#..",
        ],
        'Z' => [
            "#####", "....#", "...#.", "..#..", ".#...", "#....", "#####",
        ],
        '0' => [
            ".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###.",
        ],
        '1' => [
            "..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        '2' => [
            ".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####",
        ],
        '3' => [
            "#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###.",
        ],
        '4' => [
            "...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.",
        ],
        '5' => [
            "#####", "#....", "####.", "....#", "....#", "#...#", ".###.",
        ],
        '6' => [
            "..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###.",
        ],
        '7' => [
            "#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#...",
        ],
        '8' => [
            ".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###.",
        ],
        '9' => [
            ".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##..",
        ],
        '.' => [
            ".....", ".....", ".....", ".....", ".....", ".##..", ".##..",
        ],
        ',' => [
            ".....", ".....", ".....", ".....", ".##..", "..#..", ".#...",
        ],
        '/' => [
            ".....", "....#", "...#.", "..#..", ".#...", "#....", ".....",
        ],
        '-' => [
            ".....", ".....", ".....", "#####", ".....", ".....", ".....",
        ],
        '(' => [
            "...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#.",
        ],
        ')' => [
            ".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#...",
        ],
        ':' => [
            ".....", ".##..", ".##..", ".....", ".##..", ".##..", ".....",
        ],
        '=' => [
            ".....", ".....", "#####", ".....", "#####", ".....", ".....",
        ],
        ' ' => [
            ".....", ".....", ".....", ".....", ".....", ".....", ".....",
        ],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_reach_the_maximum() {
        assert_eq!(nice_ticks(118_000.0), (50_000.0, 3));
        assert_eq!(nice_ticks(9.0), (2.0, 5));
        assert_eq!(short(150_000.0), "150K");
        assert_eq!(short(2_500_000.0), "2.5M");
        assert_eq!(short(20.0), "20");
    }

    #[test]
    fn writes_a_png_of_the_panels() {
        let panel = || Panel {
            title: "THROUGHPUT".into(),
            x_labels: vec!["1".into(), "8".into(), "64".into()],
            x_title: "WINDOW".into(),
            y_title: "MSGS/S".into(),
            series: vec![
                Series {
                    name: "DIRECT".into(),
                    values: vec![5000.0, 40000.0, 90000.0],
                },
                Series {
                    name: "JETWAY".into(),
                    values: vec![3000.0, 30000.0, 80000.0],
                },
            ],
        };
        let dir = std::env::temp_dir().join(format!("jetway-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plot.png");
        write(&path, &[panel(), panel()]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        assert_eq!(
            (reader.info().width, reader.info().height),
            ((2 * PANEL_WIDTH) as u32, HEIGHT as u32)
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
