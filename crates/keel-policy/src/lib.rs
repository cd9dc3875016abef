//! keel-policy (under construction).
