-- When, in event time, a prediction was made and from which issue of its match's features
-- (the features agent re-issues a pending fixture's features when a result changes them).
-- Of a model's predictions for a match, the last one made before kickoff is evaluated; the
-- reconciler rebuilds a retired ledger's counted predictions from these columns.
ALTER TABLE predictions
    ADD COLUMN IF NOT EXISTS made_at timestamptz,
    ADD COLUMN IF NOT EXISTS features_revision integer NOT NULL DEFAULT 0;
