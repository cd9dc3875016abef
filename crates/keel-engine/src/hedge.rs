//! Hedged requests (filled in by the next commit).
