//! Hostile input: generated bodies, headers and path segments through the
//! router on every backend (`properties`), and slow or oversized clients
//! against the real binary (`clients`).

mod clients;
mod properties;
