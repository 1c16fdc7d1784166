//! Maglev consistent-hash table builder.
