//! Rendering: live progress or JSON lines while a command runs, tables after.

mod progress;
pub mod report;

pub use progress::EventPrinter;
