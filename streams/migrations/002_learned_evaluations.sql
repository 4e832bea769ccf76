-- Evaluations each online model has learned from, written in the same transaction as the
-- learner's checkpoint. A reconciler that crashes after publishing to the model feed but
-- before committing its input re-publishes the same evaluations (same ids, new feed offsets):
-- the offsets in learner_checkpoints cannot recognise them, this table does, so no result is
-- learned twice.
CREATE TABLE learned_evaluations (
    model_id      text NOT NULL,
    evaluation_id text NOT NULL,
    PRIMARY KEY (model_id, evaluation_id)
);
