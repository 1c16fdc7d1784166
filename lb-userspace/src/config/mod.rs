//! Configuration: the TOML schema, HAProxy directive parsing, validation with exact
//! locations, and the typed model the rest of lb consumes.

pub mod model;
