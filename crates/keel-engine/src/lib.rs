//! keel-engine (under construction).
