//! The service keeps answering under faults: a graceful stop under load
//! (SIGTERM), PostgreSQL connections terminated under load, and the SQLite
//! file locked by another process. Each fault ends with the service answering
//! again by itself and nothing acknowledged lost (the writers' model of
//! `support::writers`). And many POSTs of one user at once, with no fault.

mod contention;
mod database;
mod graceful_stop;
