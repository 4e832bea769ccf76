-- What an operator needs to act on a monitor alert (issue 16, item 5): the model version the
-- alert is about and the matches of the first and last evaluation of its window. Nullable:
-- alerts stored before, and alerts that are not about evaluations, have none.
ALTER TABLE alerts ADD COLUMN model_version integer;
ALTER TABLE alerts ADD COLUMN first_match_id text;
ALTER TABLE alerts ADD COLUMN last_match_id text;
