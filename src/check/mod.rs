//! Offline checkers for histories recorded by tests and by `corekv bench` against
//! a running server.
//!
//! It owns the consistency models and the search that decides whether a recorded
//! history could have come from a correct engine ([`history`]: strict
//! serializability of GET/PUT/DELETE, conditional transactions and snapshot
//! multi-gets). It must never depend on the engine, the network or the disk: a
//! checker is pure, takes a history as plain data and returns a verdict, so the
//! same history gives the same verdict wherever and whenever it is checked.

pub mod history;
