-- Every redrive of a dead letter: which letter (its position on the dead-letter topic), where its
-- event went back to, and whether the payload was corrected. `tipstream dead-letters redrive`
-- refuses a letter that has a row here unless --force (each forced redrive adds a row).
CREATE TABLE dead_letter_redrives (
    id                 bigserial PRIMARY KEY,
    dead_letter_topic  text        NOT NULL,
    letter_partition   integer     NOT NULL,
    letter_offset      bigint      NOT NULL,
    source_topic       text        NOT NULL,
    source_partition   integer     NOT NULL,
    source_offset      bigint      NOT NULL,
    corrected          boolean     NOT NULL,
    payload_sha256     text        NOT NULL,
    published_partition integer    NOT NULL,
    published_offset   bigint      NOT NULL,
    forced             boolean     NOT NULL DEFAULT false,
    redriven_by        text        NOT NULL,
    redriven_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_redrives_letter
    ON dead_letter_redrives (dead_letter_topic, letter_partition, letter_offset);
