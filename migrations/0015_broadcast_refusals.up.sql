-- A host's own trigger, CHECK or foreign key on herald_deliveries may refuse
-- one token's delivery. The broadcast expander then creates every other
-- delivery of the chunk and counts the refused ones here, with the last
-- refusal's reason (the token shown only by its hash), instead of failing
-- the chunk at every try and holding every broadcast queued behind it.
ALTER TABLE herald_broadcasts ADD COLUMN refused bigint NOT NULL DEFAULT 0,
    ADD COLUMN refusal text;
