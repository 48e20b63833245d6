//! Plain, aligned CLI tables (comfy-table): columns as wide as their
//! widest cell, two spaces apart, no borders, no colour, never wrapped, so a
//! long id or timestamp stays one grep-able token.

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

/// A table with these headers.
pub fn new(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t
}

/// Right-align the columns at these positions (numbers, sizes, durations).
pub fn right(t: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The table's lines without the padding after the last column.
pub fn render(t: &Table) -> String {
    t.lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
