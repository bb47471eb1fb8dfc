//! Errors common to every route: unknown routes, wrong methods, oversized
//! and malformed bodies, and the order in which a request is checked.
