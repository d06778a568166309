//! Latency of the model requests and store operations core makes, measured by wrapping the
//! model-client factory and the store core is built with (core itself knows nothing of it).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use baton_core::ModelClientFactory;
use baton_model::{ModelClient, ModelError, ModelProviderInfo, ModelRequest, ModelResponse};
use baton_protocol::{RolloutItem, SessionMeta, ThreadId};
use baton_store::{
    ListPage, ListQuery, LoadedRollout, ReindexReport, Store, StoreError, ThreadGuard,
    TranscriptWriter, TurnRecord,
};

use super::Metrics;

/// The metrics of one HTTP server: build it first, wrap the manager's model factory and
/// store with it, then hand it to [`super::HttpOptions`].
#[derive(Clone)]
pub struct HttpMetrics(pub(crate) Arc<Metrics>);

impl Default for HttpMetrics {
    fn default() -> Self {
        Self(Arc::new(Metrics::new()))
    }
}

impl HttpMetrics {
    /// `inner`, with every model request timed.
    pub fn models(&self, inner: Arc<dyn ModelClientFactory>) -> Arc<dyn ModelClientFactory> {
        Arc::new(TimedModels {
            inner,
            metrics: self.0.clone(),
        })
    }

    /// `inner`, with every store operation timed (a transcript's appends and syncs too).
    pub fn store(&self, inner: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(TimedStore {
            inner,
            metrics: self.0.clone(),
        })
    }
}

struct TimedModels {
    inner: Arc<dyn ModelClientFactory>,
    metrics: Arc<Metrics>,
}

impl ModelClientFactory for TimedModels {
    fn client(&self, provider: &ModelProviderInfo) -> Result<Arc<dyn ModelClient>, ModelError> {
        Ok(Arc::new(TimedModel {
            inner: self.inner.client(provider)?,
            metrics: self.metrics.clone(),
        }))
    }
}

struct TimedModel {
    inner: Arc<dyn ModelClient>,
    metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl ModelClient for TimedModel {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let started = Instant::now();
        let result = self.inner.complete(request).await;
        self.metrics
            .model_request(started.elapsed(), result.is_ok());
        result
    }
}

struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    fn timed<T>(&self, operation: &'static str, call: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = call();
        self.metrics.store_operation(operation, started.elapsed());
        result
    }

    fn writer(&self, inner: Box<dyn TranscriptWriter>) -> Box<dyn TranscriptWriter> {
        Box::new(TimedWriter {
            inner,
            metrics: self.metrics.clone(),
        })
    }
}

impl Store for TimedStore {
    fn create_thread(&self, meta: &SessionMeta) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        self.timed("create_thread", || self.inner.create_thread(meta))
            .map(|w| self.writer(w))
    }

    fn create_thread_with_history(
        &self,
        meta: &SessionMeta,
        items: &[RolloutItem],
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        self.timed("create_thread_with_history", || {
            self.inner.create_thread_with_history(meta, items)
        })
        .map(|w| self.writer(w))
    }

    fn append_to(&self, id: ThreadId) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        self.timed("append_to", || self.inner.append_to(id))
            .map(|w| self.writer(w))
    }

    fn append_after_read(
        &self,
        id: ThreadId,
        len: u64,
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        self.timed("append_to", || self.inner.append_after_read(id, len))
            .map(|w| self.writer(w))
    }

    fn read_thread(&self, id: ThreadId) -> Result<LoadedRollout, StoreError> {
        self.timed("read_thread", || self.inner.read_thread(id))
    }

    fn thread_meta(&self, id: ThreadId) -> Result<SessionMeta, StoreError> {
        self.timed("thread_meta", || self.inner.thread_meta(id))
    }

    fn export_thread(&self, id: ThreadId) -> Result<String, StoreError> {
        self.timed("export_thread", || self.inner.export_thread(id))
    }

    fn read_timeline(&self, id: ThreadId) -> Result<Vec<RolloutItem>, StoreError> {
        self.timed("read_timeline", || self.inner.read_timeline(id))
    }

    fn import_thread(&self, transcript: &str) -> Result<ThreadId, StoreError> {
        self.timed("import_thread", || self.inner.import_thread(transcript))
    }

    fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        self.timed("list", || self.inner.list(query))
    }

    fn thread_ids(&self) -> HashSet<ThreadId> {
        self.timed("thread_ids", || self.inner.thread_ids())
    }

    fn try_thread_ids(&self) -> Result<HashSet<ThreadId>, StoreError> {
        self.timed("thread_ids", || self.inner.try_thread_ids())
    }

    fn lock_thread(&self, id: ThreadId) -> Result<Box<dyn ThreadGuard>, StoreError> {
        self.timed("lock_thread", || self.inner.lock_thread(id))
    }

    fn record_turn(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        self.timed("record_turn", || self.inner.record_turn(turn))
    }

    fn record_open_task(&self, thread: ThreadId, task: Option<&str>) -> Result<(), StoreError> {
        self.timed("record_open_task", || {
            self.inner.record_open_task(thread, task)
        })
    }

    fn open_tasks(&self) -> Result<Vec<(ThreadId, String)>, StoreError> {
        self.timed("open_tasks", || self.inner.open_tasks())
    }

    fn reindex(&self) -> Result<ReindexReport, StoreError> {
        self.timed("reindex", || self.inner.reindex())
    }

    fn searched_location(&self) -> PathBuf {
        self.inner.searched_location()
    }
}

struct TimedWriter {
    inner: Box<dyn TranscriptWriter>,
    metrics: Arc<Metrics>,
}

impl TranscriptWriter for TimedWriter {
    fn append_all(&mut self, items: &[RolloutItem]) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.append_all(items);
        self.metrics.store_operation("append", started.elapsed());
        result
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.sync();
        self.metrics.store_operation("sync", started.elapsed());
        result
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn path(&self) -> &Path {
        self.inner.path()
    }
}
