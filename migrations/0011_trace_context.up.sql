-- The W3C traceparent of the span that raised each notification (NULL when
-- Raise was not traced), so that every push's span links back to it, as the
-- relay's span links to the traceparent in the outbox message's metadata.
-- Adding a nullable column without a default rewrites nothing.
ALTER TABLE herald_notifications ADD COLUMN trace_parent text;
