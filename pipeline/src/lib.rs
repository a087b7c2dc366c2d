//! The ExaTrkX inference pipeline, free of Triton.
