//! The lessons screen: the list of lessons and the one on show (in the app's language,
//! `App::lang`). Its steps are carried out by the app (they act on the explorer and the training
//! form).

use crate::lessons::Lesson;

use super::keys::Action;

pub struct LessonsScreen {
    pub lessons: Vec<Lesson>,
    pub selected: usize,
    /// Lines of the lesson scrolled past (long texts in small terminals).
    pub scroll: u16,
}

impl LessonsScreen {
    pub fn new(lessons: Vec<Lesson>) -> Self {
        Self {
            lessons,
            selected: 0,
            scroll: 0,
        }
    }

    pub fn current(&self) -> Option<&Lesson> {
        self.lessons.get(self.selected)
    }

    /// Puts `lesson` first and shows it (`--lesson FILE`).
    pub fn open_first(&mut self, lesson: Lesson) {
        self.lessons.insert(0, lesson);
        self.selected = 0;
        self.scroll = 0;
    }

    /// Carries out a lessons-screen action; false when `action` is not one.
    pub fn act(&mut self, action: Action) -> bool {
        let n = self.lessons.len();
        match action {
            Action::Up if self.selected > 0 => {
                self.selected -= 1;
                self.scroll = 0;
            }
            Action::Down if self.selected + 1 < n => {
                self.selected += 1;
                self.scroll = 0;
            }
            Action::Up | Action::Down => {}
            Action::ScrollDown => self.scroll = self.scroll.saturating_add(1),
            Action::ScrollUp => self.scroll = self.scroll.saturating_sub(1),
            _ => return false,
        }
        true
    }
}
