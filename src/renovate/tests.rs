//! Tests of the renovate module through its public API, on fixtures built from the formats in RENOVATE.md.
