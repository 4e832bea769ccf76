-- A model version's coverage in event time (docs/BACKFILL.md, agents/backfill_rules.py
-- `Coverage`): the first and latest final whistle the learner took into it since the previous
-- version, and its watermark when it stored the version. Set only by an as-of-correct backfill;
-- live, trained and rolled-back versions leave all three NULL. A scorer restarting
-- mid-backfill rebuilds each model's coverages from these columns (`registry.coverages`).
-- The checks are ModelSnapshot's (`schemas.events.check_coverage`): the whistles both set or
-- both NULL and in order, the watermark not before the latest whistle.
ALTER TABLE model_versions
    ADD COLUMN IF NOT EXISTS learned_from timestamptz,
    ADD COLUMN IF NOT EXISTS learned_until timestamptz,
    ADD COLUMN IF NOT EXISTS complete_through timestamptz;
ALTER TABLE model_versions
    ADD CONSTRAINT model_versions_whistles_together
        CHECK ((learned_from IS NULL) = (learned_until IS NULL)),
    ADD CONSTRAINT model_versions_whistles_in_order
        CHECK (learned_from <= learned_until),
    ADD CONSTRAINT model_versions_complete_after_whistles
        CHECK (complete_through >= learned_until);
