//! Resolving a `--data` URL to an object store and a prefix inside it.
//!
//! - a plain path (`./om-data`, `/var/lib/om`) or `file:///abs/path`: the local file
//!   system, directory created if missing; writes are atomic (temp file + rename);
//! - `memory://NAME`: an in-process store, shared by every `DataStore` opened with the
//!   same name in this process (tests, demos).

use crate::{Error, Result};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
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
    /// The URL DataFusion registers the store under (`file:///` or `memory://NAME/`).
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
                store,
                root_url,
            });
        }
        if url.starts_with("s3://") {
            return Err(err(
                "s3:// is not supported by this build yet; use a local path, file:// or memory://"
                    .into(),
            ));
        }
        let local = match url.strip_prefix("file://") {
            Some(p) => p.to_string(),
            None if url.contains("://") => {
                return Err(err(
                    "unknown scheme; use a local path, file:///ABSOLUTE/PATH or memory://NAME"
                        .into(),
                ));
            }
            None => url.to_string(),
        };
        std::fs::create_dir_all(&local)
            .map_err(|e| err(format!("cannot create directory: {e}")))?;
        let dir = std::fs::canonicalize(&local).map_err(|e| err(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(Error::Store)?;
        let root_url = url::Url::from_directory_path(&dir)
            .map_err(|_| err("not an absolute directory".into()))?;
        Ok(DataStore {
            url: url.to_string(),
            store: Arc::new(store),
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

    /// The root URL, ending in `/`; object paths are relative to it.
    pub fn root_url(&self) -> &url::Url {
        &self.root_url
    }

    /// Writes one object.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&Path::from(path), PutPayload::from(bytes))
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
