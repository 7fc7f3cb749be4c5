-- One backup_notifications row (`n`) as the JSON object the core reads
-- straight into `Notification` (alerts.rs), times as unix milliseconds.
-- Followed by the `from` of the statement that uses it (store.rs).
select jsonb_build_object(
  'id', n.id,
  'event', n.event,
  'dispatch_id', n.dispatch_id,
  'destination', n.destination,
  -- The facts as text: the json format sends them as they are.
  'payload', n.payload::text,
  'webhook_id', n.webhook_id,
  'status', n.status,
  'attempts', n.attempts,
  'created_at', floor(extract(epoch from n.created_at) * 1000)::int8,
  'next_attempt_at', floor(extract(epoch from n.next_attempt_at) * 1000)::int8,
  'last_error', n.last_error,
  'delivered_at', floor(extract(epoch from n.delivered_at) * 1000)::int8
) as note
