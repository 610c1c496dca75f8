//! Hot reload: runs `PluginRegistry::scan` whenever a plugin directory changes, and every
//! `rescan_interval` in case the file watcher misses an event (network file systems, or a
//! directory created after the worker started).

use super::PluginRegistry;
use notify::{RecursiveMode, Watcher};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

impl PluginRegistry {
    /// Keeps the registry in step with the plugin directories until `shutdown` fires.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let _watcher = self.start_watcher(Arc::clone(&changed));

        loop {
            // A file waiting to settle is checked again after the settle period; otherwise the
            // watcher or the periodic rescan triggers the next scan.
            let wait = if self.has_settling() {
                self.settings.settle
            } else {
                self.settings.rescan_interval
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.scan().await;
        }
        tracing::debug!("plugin watcher stopped");
    }

    /// Starts a watcher on every plugin directory that exists; returns `None` (and relies on the
    /// periodic rescan) when the platform watcher cannot start.
    fn start_watcher(&self, changed: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
        let handler = move |_event: notify::Result<notify::Event>| changed.notify_one();
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(%error, interval = ?self.settings.rescan_interval, "cannot start the plugin file watcher; relying on the periodic rescan");
                return None;
            }
        };
        for dir in &self.settings.plugin_dirs {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, interval = ?self.settings.rescan_interval, "cannot watch plugin directory; relying on the periodic rescan");
            }
        }
        Some(watcher)
    }
}
