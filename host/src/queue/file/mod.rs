//! File-backed queue (being written).
