//! Where things were drawn in the last frame, so a mouse click can be resolved without drawing
//! again: the drawing code records the panes and their rows and cells, the app looks clicks up.

use ratatui::layout::{Position, Rect};

/// A pane of the explorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Sentences,
    Matrix,
    Map,
}

/// The sentence list as drawn: one row per sentence, from `first` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListHits {
    pub rows: Rect,
    pub first: usize,
    pub count: usize,
}

/// The similarity grid as drawn: cell (r, c) of the visible part is at
/// `(cells.x + c * cell_width, cells.y + r)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GridHits {
    pub cells: Rect,
    pub cell_width: u16,
    pub row0: usize,
    pub col0: usize,
    pub n: usize,
}

/// What a click landed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// A pane, outside any row or cell.
    Pane(Pane),
    Sentence(usize),
    Cell(usize, usize),
}

/// The clickable parts of the last frame (nothing when the explorer was not shown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    pub panes: Vec<(Pane, Rect)>,
    pub list: Option<ListHits>,
    pub grid: Option<GridHits>,
}

impl Hits {
    /// What is at `at`, if anything.
    pub fn at(&self, at: Position) -> Option<Hit> {
        if let Some(l) = &self.list
            && l.rows.contains(at)
        {
            let i = l.first + (at.y - l.rows.y) as usize;
            if i < l.count {
                return Some(Hit::Sentence(i));
            }
        }
        if let Some(g) = &self.grid
            && g.cells.contains(at)
            && g.cell_width > 0
        {
            let r = g.row0 + (at.y - g.cells.y) as usize;
            let c = g.col0 + ((at.x - g.cells.x) / g.cell_width) as usize;
            if r < g.n && c < g.n {
                return Some(Hit::Cell(r, c));
            }
        }
        self.panes
            .iter()
            .find(|(_, r)| r.contains(at))
            .map(|(p, _)| Hit::Pane(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cells_then_panes() {
        let hits = Hits {
            panes: vec![
                (Pane::Sentences, Rect::new(0, 0, 20, 10)),
                (Pane::Matrix, Rect::new(20, 0, 40, 10)),
            ],
            list: Some(ListHits {
                rows: Rect::new(1, 1, 18, 8),
                first: 5,
                count: 7,
            }),
            grid: Some(GridHits {
                cells: Rect::new(30, 2, 21, 3),
                cell_width: 7,
                row0: 1,
                col0: 0,
                n: 3,
            }),
        };
        assert_eq!(hits.at(Position::new(3, 1)), Some(Hit::Sentence(5)));
        assert_eq!(hits.at(Position::new(3, 2)), Some(Hit::Sentence(6)));
        // Rows below the last sentence belong to the pane only.
        assert_eq!(
            hits.at(Position::new(3, 3)),
            Some(Hit::Pane(Pane::Sentences))
        );
        assert_eq!(hits.at(Position::new(37, 2)), Some(Hit::Cell(1, 1)));
        assert_eq!(hits.at(Position::new(44, 3)), Some(Hit::Cell(2, 2)));
        assert_eq!(
            hits.at(Position::new(44, 4)),
            Some(Hit::Pane(Pane::Matrix)),
            "row 3 is past n"
        );
        assert_eq!(hits.at(Position::new(70, 4)), None);
    }
}
