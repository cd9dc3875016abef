//! keel-server (under construction).
