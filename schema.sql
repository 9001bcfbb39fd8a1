-- Gatehouse schema. Each step starts with a `-- migration: N description`
-- line; steps are applied in order, each in one transaction, and the number
-- of the newest applied step is kept in `PRAGMA user_version`.
-- Never edit a released step: add a new one.
--
-- Conventions (portable to PostgreSQL): times are INTEGER seconds since the
-- Unix epoch (UTC), ids are prefixed random TEXT, hashes are BLOBs, lists and
-- free-form objects are JSON TEXT.

-- migration: 1 users, projects, memberships, audit log
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,      -- normalised: trimmed, lower case
    full_name   TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE projects (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    plan                TEXT NOT NULL,
    stripe_customer_id  TEXT UNIQUE,
    created_at          INTEGER NOT NULL
);

CREATE TABLE memberships (
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships(user_id);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  TEXT REFERENCES projects(id) ON DELETE CASCADE,
    action      TEXT NOT NULL,
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('user', 'key', 'system')),
    actor_id    TEXT,
    target      TEXT,
    ip          TEXT,
    request_id  TEXT,
    details     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);
CREATE INDEX audit_events_by_project ON audit_events(project_id, id);

-- migration: 2 login codes, sessions, tokens, mail outbox
-- One live code per address: a new code replaces the previous one.
CREATE TABLE login_codes (
    email       TEXT PRIMARY KEY,
    code_hash   BLOB NOT NULL,             -- HMAC-SHA256(session_key, email:code)
    attempts    INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Every send-code request, for the per-address and per-IP throttles.
CREATE TABLE code_requests (
    id          INTEGER PRIMARY KEY,
    email       TEXT NOT NULL,
    ip          TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX code_requests_by_email ON code_requests(email, created_at);
CREATE INDEX code_requests_by_ip ON code_requests(ip, created_at);

-- A login session: the family of refresh tokens grown from one login.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    via_cookie      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,      -- absolute end (auth.session_max_secs)
    revoked_at      INTEGER,
    revoked_reason  TEXT,
    ip              TEXT,
    user_agent      TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY,          -- HMAC-SHA256(session_key, token)
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    parent_hash BLOB,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER                    -- spent: exchanged for a new pair
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);
CREATE INDEX refresh_tokens_by_parent ON refresh_tokens(parent_hash);

CREATE TABLE access_tokens (
    token_hash  BLOB PRIMARY KEY,          -- HMAC-SHA256(session_key, token)
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX access_tokens_by_session ON access_tokens(session_id);

-- Outgoing mail. `mailbox` rows are the local-mode mailbox; `smtp` rows are
-- the delivery queue. A body is erased once delivered or given up on.
CREATE TABLE mail_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    transport       TEXT NOT NULL CHECK (transport IN ('mailbox', 'smtp')),
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,      -- not worth delivering after this
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    failed_at       INTEGER,
    last_error      TEXT
);
CREATE INDEX mail_outbox_pending ON mail_outbox(transport, next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;

-- migration: 3 API keys and usage
CREATE TABLE api_keys (
    id                      TEXT PRIMARY KEY,
    project_id              TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    key_hash                BLOB NOT NULL UNIQUE,      -- SHA-256 of the key text
    prefix                  TEXT NOT NULL,             -- first 16 characters, for display
    name                    TEXT NOT NULL,
    type                    TEXT NOT NULL CHECK (type IN ('secret', 'publishable')),
    environment             TEXT NOT NULL,
    scopes                  TEXT NOT NULL DEFAULT '[]',   -- JSON array
    rate_limit              INTEGER,                   -- NULL: keys.default_rate_limit
    rate_window_secs        INTEGER,
    owner_id                TEXT,
    credits_remaining       INTEGER,                   -- NULL: unlimited
    credits_refill_amount   INTEGER,
    credits_refill_interval TEXT CHECK (credits_refill_interval IN ('daily', 'monthly')),
    credits_period_start    INTEGER,                   -- start of the refill interval last applied
    allowed_ips             TEXT,                      -- JSON array of CIDRs, NULL: anywhere
    metadata                TEXT NOT NULL DEFAULT '{}',
    imported                INTEGER NOT NULL DEFAULT 0, -- 1: hash imported from another service
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    last_used_at            INTEGER,
    expires_at              INTEGER,
    revoked_at              INTEGER,
    created_by              TEXT,
    rotated_from            TEXT
);
CREATE INDEX api_keys_by_project ON api_keys(project_id, created_at);
CREATE INDEX api_keys_by_owner ON api_keys(project_id, owner_id);
CREATE INDEX api_keys_imported ON api_keys(imported) WHERE imported = 1;

-- Verification counts per key per hour, written in batches.
CREATE TABLE usage_hourly (
    key_id        TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    hour          INTEGER NOT NULL,                    -- epoch seconds at the start of the hour
    valid         INTEGER NOT NULL DEFAULT 0,
    invalid       INTEGER NOT NULL DEFAULT 0,
    rate_limited  INTEGER NOT NULL DEFAULT 0,
    refused       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, hour)
) WITHOUT ROWID;
CREATE INDEX usage_hourly_by_project ON usage_hourly(project_id, hour);

-- migration: 4 outgoing webhooks and billing
CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,             -- JSON array of event types
    secret          TEXT NOT NULL,             -- whsec_<base64>, kept as it must be used
    is_active       INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    created_at      INTEGER NOT NULL,
    created_by      TEXT
);
CREATE INDEX webhook_endpoints_by_project ON webhook_endpoints(project_id);

-- One event; its id is the `webhook-id` of every delivery and retry.
CREATE TABLE webhook_messages (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One event to one endpoint, with its retry state.
CREATE TABLE webhook_deliveries (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id         TEXT NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
    endpoint_id        TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at_ms) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries(endpoint_id, id);

CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    response_status INTEGER,
    error           TEXT,
    duration_ms     INTEGER
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts(delivery_id);

-- Stripe events already applied (idempotency), written with the change they cause.
CREATE TABLE stripe_events (
    id            TEXT PRIMARY KEY,
    type          TEXT NOT NULL,
    processed_at  INTEGER NOT NULL
);

-- migration: 5 plans of Stripe customers not yet linked to a project
-- (Stripe does not order its events: a subscription may be reported before
-- the checkout that links its customer to a project).
CREATE TABLE stripe_customer_plans (
    customer_id  TEXT PRIMARY KEY,
    plan         TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- migration: 6 rotation lines and the key change feed
-- The successor of a rotated key: during the grace period both draw on the
-- successor's credit balance and rate-limit window, and a key that already
-- has a successor cannot be rotated again.
ALTER TABLE api_keys ADD COLUMN rotated_to TEXT;
CREATE INDEX api_keys_by_successor ON api_keys(rotated_to) WHERE rotated_to IS NOT NULL;
UPDATE api_keys SET rotated_to = (
    SELECT s.id FROM api_keys s WHERE s.rotated_from = api_keys.id
    ORDER BY s.created_at DESC, s.id DESC LIMIT 1);
-- Every change that can make a key refuse (revoke, rotate, leak, edit),
-- written in the transaction that makes it. Running servers read it to drop
-- their cached copy of the key, so changes made by another process (the
-- CLI) take effect within a second. Pruned after a day.
CREATE TABLE key_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash    BLOB NOT NULL,
    changed_at  INTEGER NOT NULL
);

-- migration: 7 trace context of queued work
-- The W3C traceparent of the request that queued a webhook event or a mail,
-- so its delivery is traced as part of that request (NULL when traces are
-- not exported).
ALTER TABLE webhook_messages ADD COLUMN traceparent TEXT;
ALTER TABLE mail_outbox ADD COLUMN traceparent TEXT;

-- migration: 8 monthly quota counters shared by every process
CREATE TABLE quota_counters (
    project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    period_start  INTEGER NOT NULL,                    -- the month, epoch seconds
    used          INTEGER NOT NULL,
    PRIMARY KEY (project_id, period_start)
) WITHOUT ROWID;

-- migration: 9 per-address throttles shared by every process
-- Leak reports and login-code attempts per client address, counted per
-- fixed window so that requests spread over several processes are counted
-- together.
CREATE TABLE throttles (
    bucket        TEXT PRIMARY KEY,
    window_start  INTEGER NOT NULL,
    hits          INTEGER NOT NULL
);

-- migration: 10 sliding per-address throttles
-- The previous window's count, weighted by how much of it lies within the
-- last window's length (store::maintenance::throttle_verdict).
ALTER TABLE throttles ADD COLUMN prev_hits INTEGER NOT NULL DEFAULT 0;
