//! Safe layer over the Triton backend API.
