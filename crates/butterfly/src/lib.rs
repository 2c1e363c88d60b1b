//! The Butterfly binary: serve (embedded or per role), user and migrate commands.
