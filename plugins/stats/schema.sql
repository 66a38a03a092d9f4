-- The ticket tables the Stats plugin reads: a small subset of GoatFlow's schema.
-- Portable SQL (SQLite, PostgreSQL, MariaDB).
CREATE TABLE IF NOT EXISTS ticket_state_type (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL);
CREATE TABLE IF NOT EXISTS ticket_state (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, type_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ticket_priority (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL);
CREATE TABLE IF NOT EXISTS ticket_type (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL);
CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, login VARCHAR(200) NOT NULL, first_name VARCHAR(100), last_name VARCHAR(100));
CREATE TABLE IF NOT EXISTS ticket (
    id INTEGER PRIMARY KEY,
    tn VARCHAR(50) NOT NULL,
    title VARCHAR(255) NOT NULL,
    queue_id INTEGER NOT NULL,
    ticket_state_id INTEGER NOT NULL,
    ticket_priority_id INTEGER NOT NULL,
    type_id INTEGER,
    user_id INTEGER NOT NULL,
    create_time TIMESTAMP NOT NULL,
    change_time TIMESTAMP NOT NULL
);
