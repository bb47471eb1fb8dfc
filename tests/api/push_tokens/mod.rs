//! Both push-token families (ring and message): listing, registration,
//! serials, fields, deletion, the one-token-one-row rule, isolation
//! between users, and the sweep of tokens not registered again.

mod bodies;
mod bundleid_header;
mod deletion;
mod fields;
mod hygiene;
mod listing;
mod ownership;
mod registration;
mod requests;
mod serials;
