-- A sale takes the oldest available keys of a SKU in import order. Once
-- the table is analysed, PostgreSQL would rather walk the primary key and
-- filter, assuming each SKU's keys are spread evenly over the ids; they
-- come in blocks, one per import, so the SKU imported second read past
-- every key of the first on each sale. Ordered by (imported_at, id), a
-- sale is served by this index alone (see src/keys/store.rs). Partial: a
-- key leaves it when it is sold or revoked.
create index license_keys_available on license_keys (product_sku, imported_at, id)
    where status = 'available';
