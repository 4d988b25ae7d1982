DROP INDEX IF EXISTS herald_device_tokens_user_token_idx;
ALTER TABLE herald_broadcasts DROP COLUMN IF EXISTS recipient;
