//! TrackML-like detector simulation, TrackML CSV I/O, node features and evaluation.
