//! Colours and glyphs. With `NO_COLOR` set, no colour is used at all: numbers, shading glyphs
//! and text attributes (bold, reverse) carry the meaning.

use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

/// Shading glyphs from low to high similarity.
pub const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
/// Upper bounds of the shade buckets (the last is open).
pub const SHADE_BOUNDS: [f32; 4] = [0.2, 0.4, 0.6, 0.8];

pub fn shade(v: f32) -> char {
    let i = SHADE_BOUNDS
        .iter()
        .position(|&b| v < b)
        .unwrap_or(SHADES.len() - 1);
    SHADES[i]
}

/// A diverging palette (xterm-256 indices): blue below zero, grey around it, warm above.
const HEAT: [(f32, u8); 8] = [
    (-0.2, 25),
    (0.0, 67),
    (0.2, 240),
    (0.4, 94),
    (0.6, 130),
    (0.75, 166),
    (0.9, 202),
    (f32::INFINITY, 196),
];

impl Theme {
    pub fn from_env() -> Self {
        // https://no-color.org: any non-empty value disables colour.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self { color: !no_color }
    }

    pub fn border(&self, focused: bool) -> Style {
        match (focused, self.color) {
            (true, true) => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            (true, false) => Style::new().add_modifier(Modifier::BOLD),
            (false, _) => Style::new(),
        }
    }

    /// The selected sentence, in every pane.
    pub fn selected(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    pub fn error(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    /// A matrix cell holding similarity `v`.
    pub fn heat(&self, v: f32) -> Style {
        if !self.color {
            return Style::new();
        }
        let idx = HEAT
            .iter()
            .find(|(bound, _)| v < *bound)
            .map_or(196, |&(_, c)| c);
        Style::new().bg(Color::Indexed(idx)).fg(Color::White)
    }

    /// A difference cell: green where the fine-tuned model rates a pair higher, red lower.
    pub fn diff(&self, v: f32) -> Style {
        if !self.color {
            return Style::new();
        }
        let idx = match v {
            v if v <= -0.2 => 124,
            v if v <= -0.05 => 167,
            v if v < 0.05 => 238,
            v if v < 0.2 => 71,
            _ => 28,
        };
        Style::new().bg(Color::Indexed(idx)).fg(Color::White)
    }

    pub fn heat_stops(&self) -> Vec<(f32, Style)> {
        [-0.3, -0.1, 0.1, 0.3, 0.5, 0.7, 0.8, 0.95]
            .iter()
            .map(|&v| (v, self.heat(v)))
            .collect()
    }

    pub fn point(&self) -> Color {
        if self.color {
            Color::LightBlue
        } else {
            Color::Reset
        }
    }

    /// The line from a sentence's base point to its fine-tuned point.
    pub fn trail(&self) -> Color {
        if self.color {
            Color::DarkGray
        } else {
            Color::Reset
        }
    }

    pub fn point_selected(&self) -> Color {
        if self.color {
            Color::Yellow
        } else {
            Color::Reset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shades_rise_with_similarity() {
        assert_eq!(shade(-0.5), ' ');
        assert_eq!(shade(0.3), '░');
        assert_eq!(shade(0.5), '▒');
        assert_eq!(shade(0.7), '▓');
        assert_eq!(shade(1.0), '█');
    }

    #[test]
    fn no_color_means_no_colour() {
        let t = Theme { color: false };
        assert_eq!(t.heat(0.9), Style::new());
        assert_eq!(t.selected().fg, None);
    }
}
