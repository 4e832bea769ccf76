-- The feature drift monitor (agents/drift.py): every match it took, in the order it took them
-- (with its source partition and event time, which move the windows' watermarks), so a
-- restarted or new owner rebuilds the same windows, references and firing states by replaying
-- them; and the operator's resets of its references.
CREATE TABLE drift_observations (
    seq        bigserial   PRIMARY KEY,
    match_id   text        NOT NULL,
    source     integer     NOT NULL,
    event_time timestamptz NOT NULL,
    kickoff    timestamptz NOT NULL,
    features   jsonb       NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);

-- `tipstream drift reset`: requested_at is the kickoff time asked for (NULL: the first window
-- the monitor has not closed); effective_at, set once by the monitor when it takes the reset,
-- is the start of the window from which its references restart (what a replay applies).
CREATE TABLE drift_resets (
    reset_id     bigserial PRIMARY KEY,
    requested_at timestamptz,
    effective_at timestamptz,
    requested_by text        NOT NULL,
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
