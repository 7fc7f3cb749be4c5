//! Credentials: who may call an endpoint. A report from the workflow is
//! signed ([`webhook`]) or carries the GitHub run's OIDC token ([`oidc`]);
//! a user's request carries a Supabase access token ([`token`]), and
//! [`auth`] decides whether its user is a backup admin.

pub mod auth;
pub mod oidc;
pub mod token;
pub mod webhook;
