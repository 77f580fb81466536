-- Only orders paid through a payment provider carry a payment reference;
-- a webhook order has none, and indexing its null was one index entry
-- more for every order of a sale. A refund finds its order by
-- `payment_ref = $1`, which this partial index still serves.
drop index orders_payment_ref;
create index orders_payment_ref on orders (payment_ref) where payment_ref is not null;
