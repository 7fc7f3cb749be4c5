-- A scheduled run's first report carries no dispatch id: finalize-backup
-- finds its row by GitHub's workflow run id (store.rs `by_workflow_run`),
-- newest first, so that a re-run (a later attempt) or a repeated delivery
-- continues the run it registered. Without an index that lookup read the
-- whole history, and most of all when it found nothing: every scheduled
-- backup's registration. Only rows with a workflow run are indexed; an
-- equality on the column implies it is set, so the lookup can use it.
create index backup_history_by_workflow_run
  on public.backup_history (workflow_run_id, created_at desc)
  where workflow_run_id is not null;
