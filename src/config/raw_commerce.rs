//! Settings of payments in and merchant webhooks out.

use super::{RawSettings, duration, invalid, optional_secret, positive, sku_map};
use crate::config::{EndpointSettings, PaymentSettings, SettingsError};

impl RawSettings {
    pub(super) fn payment_settings(&self) -> Result<PaymentSettings, SettingsError> {
        let payment_webhook_secret = optional_secret(&self.payment_webhook_secret);
        if let Some(secret) = &payment_webhook_secret
            && !is_standard_webhooks_secret(secret.expose())
        {
            return Err(invalid(
                "ALLOT_PAYMENT_WEBHOOK_SECRET",
                "must be a Standard Webhooks secret: whsec_ followed by base64",
            ));
        }
        Ok(PaymentSettings {
            stripe_webhook_secret: optional_secret(&self.stripe_webhook_secret),
            stripe_skus: sku_map(
                "ALLOT_STRIPE_SKUS",
                &self.stripe_skus,
                "PRICE_OR_PRODUCT_ID=SKU (for example price_1Pq=course-101,prod_Q2=course-102)",
            )?,
            payment_webhook_secret,
        })
    }

    pub(super) fn endpoint_settings(&self) -> Result<EndpointSettings, SettingsError> {
        Ok(EndpointSettings {
            timeout: positive("ALLOT_ENDPOINT_TIMEOUT", &self.endpoint_timeout)?,
            disable_after: duration("ALLOT_ENDPOINT_DISABLE_AFTER", &self.endpoint_disable_after)?,
        })
    }
}

/// `whsec_<base64>` (the prefix optional), as Standard Webhooks libraries
/// accept it.
fn is_standard_webhooks_secret(secret: &str) -> bool {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .is_ok_and(|key| !key.is_empty())
}
