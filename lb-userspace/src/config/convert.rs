//! `lb convert`: HAProxy configuration to lb TOML.
