-- The promotion gate's reports (issue 18, item 2): what the champion/challenger agent measured
-- for a challenger against the champion, what it decided and why. One row per (challenger,
-- champion): the latest report, rewritten by each check whose figures changed. A history row
-- is kept the first time each decision is reached for a challenger's version, so a re-run of
-- the same check adds nothing and the moment a gate opened (or closed) stays on record.
CREATE TABLE promotion_reports (
    challenger         text        NOT NULL,
    champion           text        NOT NULL,
    challenger_version integer     NOT NULL,
    matches            integer     NOT NULL,
    decision           text        NOT NULL CHECK (decision IN ('propose', 'hold')),
    action             text        NOT NULL CHECK (action IN ('held', 'proposed', 'promoted')),
    report             jsonb       NOT NULL,
    checked_at         timestamptz NOT NULL,
    PRIMARY KEY (challenger, champion)
);

CREATE TABLE promotion_report_history (
    challenger         text        NOT NULL,
    champion           text        NOT NULL,
    challenger_version integer     NOT NULL,
    decision           text        NOT NULL CHECK (decision IN ('propose', 'hold')),
    action             text        NOT NULL CHECK (action IN ('held', 'proposed', 'promoted')),
    matches            integer     NOT NULL,
    report             jsonb       NOT NULL,
    checked_at         timestamptz NOT NULL,
    PRIMARY KEY (challenger, champion, challenger_version, decision)
);
