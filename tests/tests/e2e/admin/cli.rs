//! The kairan-admin CLI against a real server.
