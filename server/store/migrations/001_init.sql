CREATE TABLE meta (
	key TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE tokens (
	hash TEXT PRIMARY KEY,
	role TEXT NOT NULL,
	name TEXT NOT NULL,
	created BIGINT NOT NULL
);
CREATE TABLE devices (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	hostname TEXT NOT NULL,
	kernel TEXT NOT NULL,
	labels TEXT NOT NULL,
	serial TEXT NOT NULL,
	enrolled BIGINT NOT NULL,
	last_seen BIGINT NOT NULL,
	revoked BIGINT NOT NULL,
	inventory TEXT NOT NULL,
	inventory_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX devices_serial ON devices (serial);
CREATE TABLE patches (
	sha256 TEXT PRIMARY KEY,
	id TEXT NOT NULL,
	version BIGINT NOT NULL,
	info TEXT NOT NULL,
	data BLOB NOT NULL,
	published BIGINT NOT NULL
);
CREATE INDEX patches_id ON patches (id, version);
CREATE TABLE rollouts (
	id TEXT PRIMARY KEY,
	patch_sha TEXT NOT NULL REFERENCES patches (sha256),
	state TEXT NOT NULL,
	body TEXT NOT NULL,
	created BIGINT NOT NULL,
	updated BIGINT NOT NULL
);
CREATE TABLE events (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	time BIGINT NOT NULL,
	actor TEXT NOT NULL,
	type TEXT NOT NULL,
	device TEXT NOT NULL,
	rollout TEXT NOT NULL,
	patch TEXT NOT NULL,
	message TEXT NOT NULL
);
CREATE INDEX events_device ON events (device, patch, time)
