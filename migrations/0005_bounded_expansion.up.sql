-- Bounded expansion. A recipient with more tokens than the relay expands in
-- one statement gets a row in herald_broadcasts with its recipient set: the
-- broadcast expander continues it in chunks, restricted to that user's
-- tokens. The index serves both the relay's first chunk and the
-- continuations in token order. It covers only tokens and user ids short
-- enough for every index (notification.MaxTokenLength, 1,024 bytes); longer
-- ones, which Register refuses, are never expanded.
ALTER TABLE herald_broadcasts ADD COLUMN recipient text;
CREATE INDEX herald_device_tokens_user_token_idx ON herald_device_tokens (user_id, token)
    WHERE octet_length(token) <= 1024 AND octet_length(user_id) <= 1024;
