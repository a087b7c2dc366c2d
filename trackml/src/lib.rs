//! TrackML-like detector simulation, TrackML CSV I/O, node features and evaluation.
pub mod compare;
mod csv;
pub mod detector;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod geom;
pub mod io;
pub mod sim;

pub use detector::Detector;
pub use error::{Error, Result};
pub use io::Event;
