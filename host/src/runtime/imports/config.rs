//! `config`: values from the `[config]` table of the plugin's manifest.

use super::HostState;
use crate::runtime::bindings::jobhost::plugin::config::Host;

impl Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

// The `types` interface has no functions; its host trait is empty.
impl crate::runtime::bindings::jobhost::plugin::types::Host for HostState {}
