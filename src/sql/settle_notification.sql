-- Records how a claimed send ended, only if the row is still under that
-- claim ($2, its attempts after the claim): a sender whose lease expired
-- while another claimed the row again must not overwrite that one's result.
-- $1 id, $2 attempts, $3 the status now (pending: retry at $4; delivered;
-- dead), $4 next attempt (unix ms, or null), $5 last_error (or null),
-- $6 now (unix ms).
update public.backup_notifications set
  status = $3::text,
  next_attempt_at = coalesce(to_timestamp($4::float8 / 1000), next_attempt_at),
  last_error = $5::text,
  delivered_at = case when $3::text = 'delivered' then to_timestamp($6::float8 / 1000) end,
  claimed_until = null
where id = $1::int8 and attempts = $2::int4 and status = 'pending'
