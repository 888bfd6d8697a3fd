//! Resolving a `--data` URL to an object store and a prefix inside it.
//!
//! - a plain path (`./om-data`, `/var/lib/om`) or `file:///abs/path`: the local file
//!   system, directory created if missing; writes are atomic (temp file + rename);
//! - `memory://NAME`: an in-process store, shared by every `DataStore` opened with the
//!   same name in this process (tests, demos);
//! - `s3://BUCKET[/PREFIX]`: Amazon S3 or any S3-compatible server, configured by the
//!   usual AWS environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_REGION`/`AWS_DEFAULT_REGION`, and for other servers `AWS_ENDPOINT_URL`, plus
//!   `AWS_ALLOW_HTTP=true` for a plain-http endpoint). Each put is a single atomic object
//!   write, which is what commit records rely on.

use crate::{Error, Result};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

static MEMORY_STORES: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> =
    LazyLock::new(Default::default);

/// An object store and the URL it was opened from.
#[derive(Clone, Debug)]
pub struct DataStore {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The store DataFusion reads through, registered for `root_url`'s scheme and host:
    /// `store` without the prefix, since DataFusion passes full object paths.
    query_store: Arc<dyn ObjectStore>,
    /// The URL of the root (`file:///DIR/`, `memory://NAME/` or `s3://BUCKET/PREFIX/`).
    root_url: url::Url,
}

impl DataStore {
    /// Opens the location named by `url`.
    pub fn open(url: &str) -> Result<DataStore> {
        let err = |message: String| Error::Location {
            url: url.to_string(),
            message,
        };
        if let Some(name) = url.strip_prefix("memory://") {
            let name = name.trim_end_matches('/').to_string();
            let store = Arc::clone(
                MEMORY_STORES
                    .lock()
                    .expect("not poisoned")
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new())),
            );
            let host = if name.is_empty() {
                "default".to_string()
            } else {
                name.replace('/', "-")
            };
            let root_url =
                url::Url::parse(&format!("memory://{host}/")).map_err(|e| err(e.to_string()))?;
            return Ok(DataStore {
                url: url.to_string(),
                query_store: Arc::clone(&store) as Arc<dyn ObjectStore>,
                store,
                root_url,
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty() {
                return Err(err("expected s3://BUCKET or s3://BUCKET/PREFIX".into()));
            }
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| {
                    err(format!(
                        "{e}; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION, and for an S3-compatible server AWS_ENDPOINT_URL (plus AWS_ALLOW_HTTP=true for http://)"
                    ))
                })?;
            let s3: Arc<dyn ObjectStore> = Arc::new(s3);
            let (store, root) = if prefix.is_empty() {
                (Arc::clone(&s3), format!("s3://{bucket}/"))
            } else {
                let prefixed: Arc<dyn ObjectStore> =
                    Arc::new(PrefixStore::new(Arc::clone(&s3), prefix));
                (prefixed, format!("s3://{bucket}/{prefix}/"))
            };
            let root_url = url::Url::parse(&root).map_err(|e| err(e.to_string()))?;
            return Ok(DataStore {
                url: url.to_string(),
                store,
                query_store: s3,
                root_url,
            });
        }
        let local = match url.strip_prefix("file://") {
            Some(p) => p.to_string(),
            None if url.contains("://") => {
                return Err(err(
                    "unknown scheme; use a local path, file:///ABSOLUTE/PATH, s3://BUCKET/PREFIX or memory://NAME"
                        .into(),
                ));
            }
            None => url.to_string(),
        };
        std::fs::create_dir_all(&local)
            .map_err(|e| err(format!("cannot create directory: {e}")))?;
        let dir = std::fs::canonicalize(&local).map_err(|e| err(e.to_string()))?;
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(Error::Store)?);
        let root_url = url::Url::from_directory_path(&dir)
            .map_err(|_| err("not an absolute directory".into()))?;
        Ok(DataStore {
            url: url.to_string(),
            query_store: Arc::clone(&store),
            store,
            root_url,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The store to register with a query engine for [`DataStore::root_url`]: it takes
    /// full object paths (no prefix of its own).
    pub fn query_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.query_store)
    }

    /// The root URL, ending in `/`; object paths are relative to it.
    pub fn root_url(&self) -> &url::Url {
        &self.root_url
    }

    /// Writes one object.
    pub async fn put(&self, path: &str, bytes: impl Into<bytes::Bytes>) -> Result<()> {
        self.store
            .put(&Path::from(path), PutPayload::from(bytes.into()))
            .await?;
        Ok(())
    }

    /// Reads one object; `None` if it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&Path::from(path)).await {
            Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes one object; deleting one that does not exist is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes objects (in batches where the store supports it, e.g. S3's
    /// DeleteObjects); ones that do not exist are not an error.
    pub async fn delete_all(&self, paths: Vec<String>) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let locations = futures::stream::iter(paths.into_iter().map(|p| Ok(Path::from(p)))).boxed();
        self.store
            .delete_stream(locations)
            .map(|r| match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            })
            .try_collect::<()>()
            .await?;
        Ok(())
    }

    /// Lists object paths under a prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let items: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?;
        Ok(items.into_iter().map(|m| m.location.to_string()).collect())
    }
}
