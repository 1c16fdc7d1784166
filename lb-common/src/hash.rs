//! The packet hash shared by the data path and the host tests.
