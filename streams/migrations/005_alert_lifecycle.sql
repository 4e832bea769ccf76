-- The alert lifecycle an operator works: open -> acknowledged -> resolved, with who, when and a
-- note. `state` stays what the detector said (firing/resolved); `status` is what the operator
-- (or a recovery) did about it. A recovery alert resolves the open decay alerts of the same
-- model, scope and metric (resolved_by 'recovery', resolved_by_alert its id), written by
-- agents/alert_store.py in the same call that stores the recovery.
ALTER TABLE alerts
    ADD COLUMN status text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'acknowledged', 'resolved')),
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolved_by text,
    ADD COLUMN resolved_by_alert text,
    ADD COLUMN note text,
    -- When the row was committed, on the database's clock: `alerts tail` follows this, not
    -- created_at (the worker's clock when it decided, which a slow or retried write lags).
    ADD COLUMN stored_at timestamptz NOT NULL DEFAULT clock_timestamp();

-- Alerts stored before this migration: a recovery is itself resolved; a decay followed by a
-- recovery of the same model, scope and metric was resolved by it.
UPDATE alerts SET status = 'resolved', resolved_at = created_at, resolved_by = source
WHERE state = 'resolved';
UPDATE alerts d
SET status = 'resolved', resolved_at = r.created_at, resolved_by = 'recovery',
    resolved_by_alert = r.alert_id
FROM alerts r
WHERE d.kind = 'decay' AND d.status <> 'resolved' AND r.kind = 'recovery'
  AND r.model_id IS NOT DISTINCT FROM d.model_id AND r.scope = d.scope
  AND r.metric IS NOT DISTINCT FROM d.metric AND r.created_at >= d.created_at;

-- `alerts list --status open` (newest first) and `alerts tail` (after a point in time).
CREATE INDEX alerts_status ON alerts (status, created_at);
CREATE INDEX alerts_created ON alerts (created_at);
CREATE INDEX alerts_stored ON alerts (stored_at);
