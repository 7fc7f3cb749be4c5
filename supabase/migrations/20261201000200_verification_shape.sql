-- A verification verdict must have its mode and its ok.
--
-- The check of 20261130001200_restorable.sql compared members that may be
-- absent: `verification ->> 'mode' in ('list', 'restore')` is null when
-- there is no mode, and a CHECK passes on null, so a verdict without a
-- mode or an ok passed it. The core refuses such a verdict before it
-- writes (src/verification.rs reads the verdict's own members); this is
-- the database's own line, and now it holds too.
alter table public.backup_history
  drop constraint verification_shape,
  add constraint verification_shape check (
    verification is null or (
      jsonb_typeof(verification) = 'object'
      and coalesce(verification ->> 'mode' in ('list', 'restore'), false)
      and coalesce(jsonb_typeof(verification -> 'ok') = 'boolean', false)
    )) not valid;

-- Checked against the stored verdicts too. A project that stored one
-- without a mode or an ok (possible before this migration) keeps it, and
-- the constraint still holds for every row written from now on, and the
-- migration says so in a warning. Deleting or rewriting a verdict
-- the workflow sent is not this migration's to decide.
do $$
begin
  alter table public.backup_history validate constraint verification_shape;
exception when check_violation then
  raise warning 'backup_history: a stored verification verdict has no mode or no ok; '
    'the constraint verification_shape checks new verdicts, and validates once '
    'those rows are corrected';
end
$$;
