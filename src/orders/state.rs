//! Where a stored order stands.

crate::stored_state! {
    /// The `state` of an order row and of each entry of its history.
    pub enum OrderState: "order state" {
        /// A key assigned and its email queued.
        Fulfilled = "fulfilled",
        /// Kept until keys arrive.
        AwaitingStock = "awaiting_stock",
        /// The payload could not be used; the raw body is kept.
        NeedsAttention = "needs_attention",
        /// Paid, then taken back.
        Refunded = "refunded",
    }
}
