-- The keys retention deletes now for one success `s` (its dispatch_id, and
-- folder: the folder of its key, ending in '/'), as a JSON array, oldest
-- first, from retention_due.sql's `due` (retention.sql says which, and why):
-- in that folder, directly, named for their own run, not `s` itself, at most
-- $2 (retention.rs MAX_KEYS). An expression, for the statement's select list.
coalesce((
  select jsonb_agg(k.s3_key order by k.finished_at)
  from (
    select u.s3_key, u.finished_at
    from due u
    where u.dispatch_id <> s.dispatch_id
      and left(u.s3_key, length(s.folder)) = s.folder
      and position('/' in substr(u.s3_key, length(s.folder) + 1)) = 0
      and substr(u.s3_key, length(s.folder) + 1)
          like '%\_' || u.dispatch_id::text || '.%'
    order by u.finished_at
    limit $2::int4
  ) k
), '[]'::jsonb)::text
