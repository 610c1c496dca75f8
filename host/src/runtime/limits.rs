//! Per-store resource caps: total linear memory across all of an instance's memories, plus
//! caps on instances, tables and table elements.

use wasmtime::ResourceLimiter;

/// Default cap on a plugin instance's linear memory, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Largest memory cap a manifest may set, in MiB: the 4 GiB a 32-bit linear memory can address.
pub const MAX_MEMORY_MIB: u64 = 4096;

/// Core instances one store may create; see `engine::CORE_INSTANCES_PER_COMPONENT`.
const MAX_INSTANCES: usize = 16;
const MAX_TABLES: usize = 4;
const MAX_MEMORIES: usize = 2;
/// Elements one table may hold; a large Rust guest has a few thousand.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Enforces a store's memory cap. Growth past the cap traps instead of making `memory.grow`
/// return -1. So the attempt fails as over its memory cap even when the guest would have handled
/// the failed allocation and reported it under another code. A plugin that needs more memory
/// raises `memory_mib` in its manifest.
#[derive(Debug)]
pub struct StoreLimiter {
    memory_limit: usize,
    /// Bytes of linear memory granted so far, summed over all memories of the store.
    memory_used: usize,
    /// The last growth granted, undone when the growth fails after all.
    last_grant: usize,
    /// Total bytes the rejected growth asked for.
    rejected: Option<usize>,
}

impl StoreLimiter {
    pub fn new(memory_limit_bytes: usize) -> Self {
        StoreLimiter {
            memory_limit: memory_limit_bytes,
            memory_used: 0,
            last_grant: 0,
            rejected: None,
        }
    }

    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// Total bytes the growth past the cap asked for, if one was rejected.
    pub fn rejected_growth(&self) -> Option<usize> {
        self.rejected
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Growth past the memory's own maximum is granted here and fails in wasmtime, which then
        // calls `memory_grow_failed` to undo the grant.
        let growth = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(growth);
        if total > self.memory_limit {
            self.rejected.get_or_insert(total);
            return Err(wasmtime::Error::msg(format!(
                "linear memory would grow to {total} bytes, above the {}-byte cap",
                self.memory_limit
            )));
        }
        self.memory_used = total;
        self.last_grant = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used -= self.last_grant;
        self.last_grant = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|maximum| desired <= maximum))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn memory_cap_spans_all_memories() {
        let mut limiter = StoreLimiter::new(4 * MIB);
        assert!(limiter.memory_growing(0, 2 * MIB, None).expect("grow"));
        assert!(
            limiter
                .memory_growing(0, 2 * MIB, None)
                .expect("second memory")
        );
        let error = limiter
            .memory_growing(2 * MIB, 3 * MIB, None)
            .expect_err("over cap");
        assert!(error.to_string().contains("4194304-byte cap"), "{error}");
        assert_eq!(limiter.rejected_growth(), Some(5 * MIB));
    }

    #[test]
    fn failed_growth_is_not_counted() {
        let mut limiter = StoreLimiter::new(4 * MIB);
        assert!(limiter.memory_growing(0, 3 * MIB, None).expect("grow"));
        limiter
            .memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .expect("undo");
        assert!(limiter.memory_growing(0, 4 * MIB, None).expect("full cap"));
        assert_eq!(limiter.rejected_growth(), None);
    }
}
