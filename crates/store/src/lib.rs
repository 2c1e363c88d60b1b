//! Durable storage for Butterfly: the SQLite implementation of the core Store port, with migrations.
