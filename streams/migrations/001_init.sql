-- The evaluation log and the model registry. Every write the service makes is an upsert on a
-- deterministic id, so at-least-once delivery never creates a second row.

CREATE TABLE match_features (
    match_id     text PRIMARY KEY,
    league       text        NOT NULL,
    season       text        NOT NULL,
    kickoff      timestamptz NOT NULL,
    home_team    text        NOT NULL,
    away_team    text        NOT NULL,
    payload      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX match_features_kickoff ON match_features (kickoff, match_id);

CREATE TABLE results (
    match_id     text PRIMARY KEY,
    league       text        NOT NULL,
    kickoff      timestamptz NOT NULL,
    home_goals   integer     NOT NULL CHECK (home_goals >= 0),
    away_goals   integer     NOT NULL CHECK (away_goals >= 0),
    outcome      char(1)     NOT NULL CHECK (outcome IN ('H', 'D', 'A')),
    revision     integer     NOT NULL DEFAULT 1,
    payload      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE predictions (
    prediction_id text PRIMARY KEY,
    match_id      text        NOT NULL,
    league        text        NOT NULL,
    kickoff       timestamptz NOT NULL,
    model_id      text        NOT NULL,
    model_version integer     NOT NULL,
    is_champion   boolean     NOT NULL,
    p_home        double precision NOT NULL,
    p_draw        double precision NOT NULL,
    p_away        double precision NOT NULL,
    predicted     char(1)     NOT NULL,
    confidence    double precision NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX predictions_match ON predictions (match_id);
CREATE INDEX predictions_model ON predictions (model_id, kickoff);

CREATE TABLE evaluations (
    evaluation_id text PRIMARY KEY,
    prediction_id text        NOT NULL,
    match_id      text        NOT NULL,
    league        text        NOT NULL,
    kickoff       timestamptz NOT NULL,
    model_id      text        NOT NULL,
    model_version integer     NOT NULL,
    is_champion   boolean     NOT NULL,
    predicted     char(1)     NOT NULL,
    outcome       char(1)     NOT NULL,
    home_goals    integer     NOT NULL,
    away_goals    integer     NOT NULL,
    hit           boolean     NOT NULL,
    confidence    double precision NOT NULL,
    log_loss      double precision NOT NULL,
    brier         double precision NOT NULL,
    rps           double precision NOT NULL,
    supersedes    text,
    -- Set when a corrected result replaced this evaluation; current rows have it NULL.
    superseded_by text,
    evaluated_at  timestamptz NOT NULL
);
CREATE INDEX evaluations_model ON evaluations (model_id, kickoff);
CREATE INDEX evaluations_match ON evaluations (match_id);
CREATE INDEX evaluations_prediction ON evaluations (prediction_id);

-- Model registry: one row per (model, version); the serialized state is HMAC-signed.
CREATE TABLE model_versions (
    model_id           text        NOT NULL,
    version            integer     NOT NULL,
    parent_version     integer,
    kind               text        NOT NULL,
    metrics            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    learned            bigint      NOT NULL DEFAULT 0,
    last_evaluation_id text,
    -- Position of the last learn event applied, per partition: a replay never teaches twice.
    positions          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state              bytea       NOT NULL,
    state_sha256       text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, version)
);

CREATE TABLE models (
    model_id    text PRIMARY KEY,
    kind        text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('champion', 'challenger', 'reference', 'retired')),
    policy      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- At most one champion at any time.
CREATE UNIQUE INDEX models_one_champion ON models (status) WHERE status = 'champion';

-- Every change of champion, so rollback can restore the previous one.
CREATE TABLE champion_history (
    id          bigserial PRIMARY KEY,
    model_id    text        NOT NULL,
    reason      text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alerts (
    alert_id            text PRIMARY KEY,
    kind                text        NOT NULL,
    state               text        NOT NULL,
    model_id            text,
    source              text        NOT NULL,
    scope               text        NOT NULL,
    metric              text,
    detector            text        NOT NULL,
    window_size         integer     NOT NULL,
    baseline            double precision,
    current_value       double precision,
    threshold           double precision,
    first_evaluation_id text,
    last_evaluation_id  text,
    message             text        NOT NULL,
    created_at          timestamptz NOT NULL
);
CREATE INDEX alerts_model ON alerts (model_id, created_at);

-- Where a replay stopped, so --resume continues after the last acknowledged event.
CREATE TABLE replay_checkpoints (
    replay_id   text PRIMARY KEY,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The learner's durable state, rewritten after every batch it learns from and before that batch
-- is acknowledged: with the applied offsets stored beside the state, a restart never teaches a
-- model the same result twice and never forgets one.
CREATE TABLE learner_checkpoints (
    model_id     text PRIMARY KEY,
    version      integer     NOT NULL,
    learned      bigint      NOT NULL,
    learned_since_version bigint NOT NULL,
    positions    jsonb       NOT NULL,
    state        bytea       NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
