CREATE TABLE sessions (
	hash TEXT PRIMARY KEY,
	token_hash TEXT NOT NULL,
	csrf TEXT NOT NULL,
	created BIGINT NOT NULL,
	expires BIGINT NOT NULL
);
CREATE TABLE exposure (
	time BIGINT NOT NULL,
	cve TEXT NOT NULL,
	vulnerable BIGINT NOT NULL,
	protected BIGINT NOT NULL,
	fixed BIGINT NOT NULL
);
CREATE INDEX exposure_time ON exposure (time);
CREATE INDEX events_rollout ON events (rollout, seq)
