-- The dashboard finds a buyer's orders by email address, newest first.
create index orders_email on orders (email, id);
