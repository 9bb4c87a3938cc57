//! Plain-text tables in kubectl's style: upper-case headers, columns padded to their
//! widest cell, separated by three spaces, no trailing blanks.

/// A table under construction.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row; missing cells are blank, extra cells are kept.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, width) in widths.iter().enumerate() {
                let cell = row.get(c).map_or("", String::as_str);
                line.push_str(cell);
                if c + 1 < columns {
                    let pad = width - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_on_the_widest_cell_even_with_arrows() {
        let mut table = Table::new(&["APP", "VERSIONS"]);
        table.row(vec!["db".into(), "v1.4.0 → v1.5.0".into()]);
        table.row(vec!["gitea".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "APP     VERSIONS\ndb      v1.4.0 → v1.5.0\ngitea   -\n"
        );
    }

    #[test]
    fn short_rows_leave_no_trailing_blanks() {
        let mut table = Table::new(&["A", "B", "C"]);
        table.row(vec!["x".into()]);
        assert_eq!(table.render(), "A   B   C\nx\n");
    }
}
