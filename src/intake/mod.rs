//! Order intake from shop webhooks. So far: turning each source's payload
//! into typed orders ([`normalize`]); the HTTP route, idempotency and
//! vending build on it.

pub mod normalize;
