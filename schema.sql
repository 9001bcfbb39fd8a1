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
