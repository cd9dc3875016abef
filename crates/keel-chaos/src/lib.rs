//! keel-chaos (under construction).
