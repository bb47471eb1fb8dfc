//! Sign-up, login, logout, refresh and session handling.

mod errors_and_restart;
mod login;
mod logout;
mod refresh;
mod sessions;
mod sign_up;
mod sign_up_fields;
