-- Which match each learned result belongs to, and the version it was learned on top of: the
-- result is part of every later version of the model. The reconciler refuses a prediction of
-- that match by such a version (it was made by a model that knew the result). Rows learned
-- before this migration have NULLs and refuse nothing.
ALTER TABLE learned_evaluations
    ADD COLUMN match_id text,
    ADD COLUMN learned_after_version integer;
CREATE INDEX learned_evaluations_by_match ON learned_evaluations (model_id, match_id);
