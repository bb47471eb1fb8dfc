//! The real binary, started on port 0 and spoken to over TCP.
