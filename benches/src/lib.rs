//! Shared workloads for the criterion benches in `benches/benches/`.
