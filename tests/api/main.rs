//! Integration tests: the real server on port 0, called with the generated
//! tonic client. Every test gets a fresh database: a temporary SQLite file,
//! or, when `WARDEN_TEST_DATABASE_URL` is set, a new PostgreSQL database.

mod helpers;

mod admin;
mod backup;
mod cli;
mod connections;
mod ecosystem;
mod email;
mod health;
mod keys;
mod limits;
mod lockout;
mod login;
mod mail;
mod migrations;
mod orgs;
mod outage;
mod postgres_cluster;
mod profile;
mod register;
mod replicas;
mod secrets;
mod sessions;
mod tokens;
