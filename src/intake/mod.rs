//! Order intake from shops: who may deliver ([`auth`]) and turning each
//! source's payload into typed orders ([`normalize`]).
//!
//! Owns parsing and authentication only: no table, no route. What happens
//! to an order, and the webhook route itself, belong to `orders`.

pub mod auth;
pub mod normalize;
