//! keel-wire (under construction).
