//! Sign-up, login, logout, refresh, password change and session handling.

mod errors_and_restart;
mod login;
mod logout;
mod password;
mod refresh;
mod sessions;
mod sign_up;
mod sign_up_fields;
