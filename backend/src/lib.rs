//! Triton custom backend `exatrkx`.
