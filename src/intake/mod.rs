//! Order intake from shop webhooks: who may deliver ([`auth`]), turning each
//! source's payload into typed orders ([`normalize`]) and the route
//! ([`routes`]). What happens to an order then is [`crate::orders`].

pub mod auth;
pub mod normalize;
pub mod routes;
