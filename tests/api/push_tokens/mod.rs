//! Both push-token families (ring and message): listing, registration,
//! serials, fields, deletion, the one-token-one-row rule and isolation
//! between users.

mod bodies;
mod bundleid_header;
mod deletion;
mod fields;
mod listing;
mod ownership;
mod registration;
mod requests;
mod serials;
