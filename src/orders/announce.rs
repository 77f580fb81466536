//! Telling merchant endpoints about an order, inside the transaction
//! that changed it: the one helper every change of an order (placed,
//! waiting, set aside, refunded) goes through.

use serde_json::json;

use super::{Fulfilment, store};
use crate::{
    db::Tx,
    merchant::{self, Event},
};

impl Fulfilment {
    /// Tells merchants subscribed to `kind` about order `id` as it is now
    /// in `tx` (read only when someone listens).
    pub(super) async fn announce(
        &self,
        tx: &mut Tx,
        id: i64,
        kind: &'static str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let targets = merchant::subscribers(tx, kind).await?;
        self.announce_to(tx, &targets, id, kind, now).await
    }

    /// [`Self::announce`] to `targets`, read once by a caller that announces
    /// many orders in one transaction.
    pub(super) async fn announce_to(
        &self,
        tx: &mut Tx,
        targets: &[i64],
        id: i64,
        kind: &'static str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        if targets.is_empty() {
            return Ok(());
        }
        let order = store::summary(tx, id).await?;
        let event = Event::new(kind, json!({ "order": order })).with_key(order.license_key_id);
        merchant::publish(tx, targets, &event, now, self.max_attempts).await
    }
}
