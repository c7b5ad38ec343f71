//! The network face of corekv: the wire codec, the server, and the client.
//!
//! It owns sockets and bytes on the wire. It must never reach into a shard's
//! state: requests become operation batches handed to the shard router, and
//! nothing here knows how data is stored or logged.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod client;
pub mod codec;
pub mod conn_buf;
pub mod connection;
pub mod inbound;
pub mod listener;
pub mod outbound;
pub mod request_batch;
pub mod resp;
pub mod server;
pub mod stream;
pub mod tls;
