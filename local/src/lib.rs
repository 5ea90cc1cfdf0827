//! The pieces of `quiver-local`, public so that integration tests can drive them.

pub mod bench;
pub mod build;
pub mod env;
pub mod export;
pub mod index;
pub mod migrate;
pub mod rehearse;
pub mod runtime_api;
pub mod s3server;
pub mod seed;
pub mod serve;
pub mod services;
pub mod template;
