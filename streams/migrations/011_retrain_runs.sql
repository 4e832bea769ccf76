-- Scheduled and decay-triggered refits of the batch models (agents/trainer.py). One row per run:
-- requested (a schedule tick or a decay alert on the champion), started and finished by the
-- leader's trainer, with what each model's fit did (registered version and its cross-validated
-- figures, skipped and why, failed and the error) in `detail`. A run started but never finished
-- (the leader died) is picked up again by the next leader.
CREATE TABLE IF NOT EXISTS retrain_runs (
    run_id       bigserial PRIMARY KEY,
    trigger      text        NOT NULL CHECK (trigger IN ('schedule', 'decay')),
    -- The decay alert that asked for the run (one run per alert, and per cooldown).
    alert_id     text UNIQUE,
    model_id     text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    outcome      text CHECK (outcome IN ('registered', 'skipped', 'failed')),
    detail       jsonb       NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX IF NOT EXISTS retrain_runs_pending ON retrain_runs (run_id) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS retrain_runs_trigger ON retrain_runs (trigger, requested_at);
