//! What a shard hands to the code that serves it (the network server, an embedded
//! application, a benchmark): the router to every shard's data, and the shutdown
//! signal that code must obey.

use std::rc::Rc;

use crate::core::status::Status;
use crate::core::types::{Durability, ShardId};

use super::ops::OpKind;
use super::router::{RoutedBatch, Router};
use super::sync::Event;

/// Per-core handle to the engine. Cheap to clone; lives on its core (`!Send`).
#[derive(Clone)]
pub struct ShardContext {
    pub router: Rc<Router>,
    /// Set when the engine is asked to stop. The service must stop accepting new
    /// work, finish what it started, and return.
    pub shutdown: Rc<Event>,
    pub durability: Durability,
}

impl ShardContext {
    pub fn shard(&self) -> ShardId {
        self.router.id
    }

    pub fn shard_count(&self) -> u16 {
        self.router.shard_count
    }

    /// A reusable batch for [`Router::execute`], the allocation-free path.
    pub fn new_batch(&self) -> RoutedBatch {
        RoutedBatch::new(self.router.shard_count)
    }

    /// Read one key. Convenient, not the fast path: it allocates a batch.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Status> {
        let (status, value) = self.one(OpKind::Get, key, b"").await;
        match status {
            Status::Ok => Ok(Some(value)),
            Status::NotFound => Ok(None),
            other => Err(other),
        }
    }

    /// Write one key; returns once durable (sync mode) or logged (async mode).
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        match self.one(OpKind::Put, key, value).await.0 {
            Status::Ok => Ok(()),
            other => Err(other),
        }
    }

    /// Delete one key; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, Status> {
        let (status, body) = self.one(OpKind::Delete, key, b"").await;
        match status {
            Status::Ok => Ok(body.first() == Some(&1)),
            other => Err(other),
        }
    }

    async fn one(&self, kind: OpKind, key: &[u8], value: &[u8]) -> (Status, Vec<u8>) {
        if key.len() > crate::core::limits::KEY_BYTES_MAX {
            return (Status::KeyTooLarge, Vec::new());
        }
        let mut batch = self.new_batch();
        let shard = self.router.shard_of(key);
        batch.push(shard, kind, key, value);
        self.router.execute(&mut batch).await;
        let (status, value) = batch.replies(shard).get(0);
        (status, value.to_vec())
    }
}
