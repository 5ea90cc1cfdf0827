//! Versioned artifacts in S3 (Parquet snapshots, index bundles): files go under
//! `<prefix>/<version>/`, then `<prefix>/manifest.json` is written last, so a half-published
//! version is never visible. Readers keep one loaded version per instance, check the manifest at
//! most every N seconds with a conditional GET (comparing the ETag too: some S3 servers ignore
//! `If-None-Match`), verify every file's size and checksum, and switch atomically, in the
//! background: requests never wait for a switch. A new version that is broken, or does not fit
//! on disk, keeps the old one serving (and is reported as stale); with nothing loaded it is a
//! 503 with the reason.
//!
//! Publishing is safe with many publishers (the schedule, a manual POST, a client's retry on
//! other instances): one run at a time holds the prefix's [`Lease`]; the manifest only moves
//! forward (a conditional PUT on the ETag it replaces); [`retain`] deletes only versions older
//! than the manifest's that it no longer lists, and none younger than a grace period.

mod fetch;
mod manifest;
mod publish;
mod tracker;

pub use fetch::*;
pub use manifest::*;
pub use publish::*;
pub use tracker::*;

/// Files of one version downloaded at once.
const PARALLEL_DOWNLOADS: usize = 16;
