//! `quiver`: what the Quiver Lambda functions share. Each heavy dependency sits behind the feature
//! named after its module, so a function links only what it uses.

pub mod config;
pub mod error;
pub mod http;

#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "pg")]
pub mod pg;
#[cfg(feature = "s3")]
pub mod storage;
pub mod testing;
#[cfg(feature = "cache")]
pub mod valkey;

pub use config::{Config, Need};
pub use error::{Error, Result};

/// The version every function reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
